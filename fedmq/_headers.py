"""The application headers fedmq writes on messages it retries, parks or drops."""

#: The text of the exception behind the latest failed run.
PROCESSING_EXCEPTION = "X-Processing-Exception"
#: How many runs of the callback have failed so far.
PROCESSING_EXCEPTIONS = "X-Processing-Exceptions"
#: Where the message was first published, and the queue it was first consumed from.
ORIGINAL_EXCHANGE = "X-Original-Exchange"
ORIGINAL_ROUTING_KEY = "X-Original-Routing-Key"
ORIGINAL_QUEUE = "X-Original-Queue"
#: Who dropped or parked the message, why, and when (ISO-8601, UTC).
DROPPED_BY = "X-Dropped-By"
DROPPED_REASON = "X-Dropped-Reason"
DROPPED_TIMESTAMP = "X-Dropped-Timestamp"

#: Headers that describe one consumer's verdict, not the message itself.
VERDICT_HEADERS = (
    DROPPED_BY,
    DROPPED_REASON,
    DROPPED_TIMESTAMP,
    PROCESSING_EXCEPTION,
    PROCESSING_EXCEPTIONS,
)

#: The headers fedora-messaging's publishers write and its consumers read:
#: the message's schema name, its severity, and when it was sent (ISO-8601).
FEDORA_SCHEMA = "fedora_messaging_schema"
FEDORA_SEVERITY = "fedora_messaging_severity"
SENT_AT = "sent-at"
