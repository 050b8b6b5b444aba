"""A consumer process for the at-least-once test: echoes each candidate batch's
query_id to the labels topic, and hangs (to be killed) on the batch that holds a
query_id starting with "hang"."""

from __future__ import annotations

import sys
import time

from relevance.v1 import common_pb2, topics_pb2

from contracts.topics import CANDIDATES, LABELS
from services.core import bus
from services.core.settings import get_settings


def main(group: str) -> None:
    settings = get_settings()
    publisher = bus.Publisher(settings)

    def echo(deliveries):
        for d in deliveries:
            if d.message.query_id.startswith("hang"):
                publisher.flush()
                print("HANGING", flush=True)
                time.sleep(600)
            publisher.publish(
                LABELS,
                d.message.query_id,
                topics_pb2.LabelRecord(
                    query_id=d.message.query_id, teacher=common_pb2.ModelRef(name="echo")
                ),
            )
        return []

    bus.ConsumerLoop(settings, CANDIDATES, group, echo, publisher, max_poll_records=5).run()


if __name__ == "__main__":
    main(sys.argv[1])
