"""ccwatch.ingest.mqtt leans on two private attributes of aiomqtt 2.5.

``client._client`` (the paho client: manual acks, so a message is acknowledged only
after processing) and ``client._queue`` (aiomqtt's bounded incoming queue, drained in
batches). pyproject pins aiomqtt to 2.5.x; this test names the cause if an upgrade moves
them, instead of an end-to-end test timing out.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import paho.mqtt.client as paho


def test_aiomqtt_exposes_what_the_ingest_loop_uses() -> None:
    async def build() -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", 1, identifier="internals-probe", clean_session=False)

    client = asyncio.run(build())
    assert isinstance(client._client, paho.Client), "aiomqtt.Client._client moved"
    assert hasattr(client._client, "manual_ack_set") and hasattr(client._client, "ack")
    assert isinstance(client._queue, asyncio.Queue), "aiomqtt.Client._queue moved"
