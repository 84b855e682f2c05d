"""Commands: orders sent to the ingest service (by the gateway over NATS request/reply, or by
other services through the intake stream), and the one reply shape.

One module per domain defines its commands and their union; this package joins them.
"""

from __future__ import annotations

import msgspec

from shared.commands.contributions import ContributionsCommand
from shared.commands.envelope import Command, Reply
from shared.commands.heartbeat import (
    HeartbeatCommand,
    RecordBeat,
    RecordPageVisit,
    RegenerateDeviceToken,
    RegisterDevice,
)
from shared.commands.links import CreateLink, DeleteLink, LinksCommand, RecordLinkUsage, UpdateLink
from shared.commands.media import (
    DeleteMediaUsage,
    DeleteMediaUsages,
    MediaCommand,
    RecordDigitalUsages,
    RecordDownloadUsage,
    RecordFrontUsage,
    RecordPrintUsages,
    RecordSyndicationUsage,
    UpdateMediaUsageStatus,
)
from shared.commands.metering import MeteringCommand

# A new domain adds its union here.
AnyCommand = HeartbeatCommand | LinksCommand | MediaCommand | MeteringCommand | ContributionsCommand

command_decoder = msgspec.json.Decoder(AnyCommand)
reply_decoder = msgspec.json.Decoder(Reply)
encoder = msgspec.json.Encoder()

__all__ = [
    "AnyCommand",
    "Command",
    "CreateLink",
    "DeleteLink",
    "DeleteMediaUsage",
    "DeleteMediaUsages",
    "RecordBeat",
    "RecordDigitalUsages",
    "RecordDownloadUsage",
    "RecordFrontUsage",
    "RecordLinkUsage",
    "RecordPageVisit",
    "RecordPrintUsages",
    "RecordSyndicationUsage",
    "RegenerateDeviceToken",
    "RegisterDevice",
    "Reply",
    "UpdateLink",
    "UpdateMediaUsageStatus",
    "command_decoder",
    "encoder",
    "reply_decoder",
]
