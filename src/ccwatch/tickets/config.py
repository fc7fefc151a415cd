"""The ``tickets:`` list of config.yaml: a union of every registered upstream type's model.

Each upstream type's model lives in its own module under ``tickets/adapters/`` (see
that package); this builds the discriminated union the root config validates against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from ccwatch.tickets.adapters import UpstreamBase, upstream_types

if TYPE_CHECKING:
    TicketUpstream = UpstreamBase
else:
    TicketUpstream = Annotated[
        Union[tuple(upstream.model for upstream in upstream_types().values())],  # noqa: UP007
        Field(discriminator="type"),
    ]

__all__ = ["TicketUpstream", "UpstreamBase"]
