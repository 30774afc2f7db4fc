"""A pure-Python MQTT broker (amqtt) for the demo on machines without mosquitto. Fine for a demo, not for load.

    python scripts/embedded_broker.py PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import warnings


async def serve(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
    }
    broker = Broker(config)
    await broker.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1])))
