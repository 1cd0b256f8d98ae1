# The twistd plugin: `twistd -n fedmq --config FILE`. Deliberately no
# __init__.py beside this file: twisted.plugins is Twisted's namespace.
from twisted.application.service import ServiceMaker

fedmq = ServiceMaker("fedmq", "fedmq.tap", "Consume from RabbitMQ with a fedmq callback.", "fedmq")
