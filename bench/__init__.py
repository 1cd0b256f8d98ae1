"""fedmq's consumer benchmark: ``python -m bench`` from the repository root.

It starts a throwaway RabbitMQ node, and for each contender fills a fresh
durable queue, then runs that contender's consumer in a fresh interpreter and
times it until every message is counted and acknowledged. It is a benchmark,
not a test: nothing under ``tests/`` runs it. ``docs/performance.md`` says what
each contender measures and how to read the table.

Modules:
    contenders: what each contender is and how many messages it gets.
    child: the program each contender runs in its own subprocess.
    fill: publishing the backlog and waiting until the queue holds it.
    report: medians, ratios, targets and the table.
    run: the command line, the broker and the rounds.
"""
