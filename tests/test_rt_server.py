"""The REST2 flow a ccwatch RT adapter will use, against a real RT 5 (tests/rt.py).

Each test makes its own tickets with a dedup key of its own, so they share the session's RT.
"""

from __future__ import annotations

import base64
import mailbox
import uuid
from typing import Any

import httpx

from tests.rt import RTServer


def search(rt: RTServer, key: str, **params: Any) -> dict[str, Any]:
    query = f"Queue = '{rt.queue}' AND 'CF.{{{rt.dedup_field}}}' = '{key}'"
    response = rt.rest("GET", "tickets", params={"query": query, "orderby": "id", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def create(rt: RTServer, key: str, **fields: Any) -> int:
    body = {
        "Queue": rt.queue,
        "Subject": f"[ccwatch blr1] acd: critical ({key})",
        "Content": "ACD: 23 of 100 seats unable to take calls (23 %)",
        "ContentType": "text/plain",
        "CustomFields": {rt.dedup_field: key},
        **fields,
    }
    response = rt.rest("POST", "ticket", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["type"] == "ticket"
    assert created["_url"] == f"{rt.rest2}/ticket/{created['id']}"
    return int(created["id"])


def test_ticket_life_ccwatch_creates_vendor_replies_ccwatch_comments_and_resolves(
    rt_server: RTServer,
) -> None:
    rt = rt_server
    key = f"blr1-acd-{uuid.uuid4().hex[:8]}"

    nothing = search(rt, key)
    assert (nothing["count"], nothing["total"], nothing["pages"], nothing["items"]) == (0, 0, 0, [])

    ticket_id = create(rt, key, Requestor="ccwatch@ccwatch.test")

    found = search(rt, key, fields="Subject,Status,CustomFields")
    assert found["count"] == 1 and found["total"] == 1
    (item,) = found["items"]
    assert item["id"] == str(ticket_id)
    assert item["Status"] == "new"
    assert item["Subject"] == f"[ccwatch blr1] acd: critical ({key})"
    assert [(cf["name"], cf["values"]) for cf in item["CustomFields"]] == [(rt.dedup_field, [key])]

    ticket = rt.rest("GET", f"ticket/{ticket_id}")
    assert ticket.status_code == 200
    assert ticket.headers["ETag"].startswith('"')
    data = ticket.json()
    assert data["id"] == ticket_id
    assert data["Creator"]["id"] == rt.ccwatch_user
    assert data["Queue"]["id"] == str(rt.rest("GET", f"queue/{rt.queue}").json()["id"])
    assert [r["id"] for r in data["Requestor"]] == [rt.ccwatch_user]  # the user with that address
    refs = {link["ref"] for link in data["_hyperlinks"]}
    assert {"history", "correspond", "comment"} <= refs

    # The vendor's staff replies: RT re-opens the new ticket (as RT_System).
    reply = rt.rest(
        "POST",
        f"ticket/{ticket_id}/correspond",
        user=rt.vendor_user,
        json={"Content": "We are looking into the ACD.", "ContentType": "text/plain"},
    )
    assert (reply.status_code, reply.json()) == (201, ["Correspondence added"])
    assert rt.rest("GET", f"ticket/{ticket_id}").json()["Status"] == "open"

    stalled = rt.rest("PUT", f"ticket/{ticket_id}", json={"Status": "stalled"})
    assert (stalled.status_code, stalled.json()) == (
        200,
        [f"Ticket {ticket_id}: Status changed from 'open' to 'stalled'"],
    )
    unchanged = rt.rest("PUT", f"ticket/{ticket_id}", json={"Status": "stalled"})
    assert (unchanged.status_code, unchanged.json()) == (200, [])

    # A reply on a stalled ticket leaves it stalled (RT re-opens only new/resolved/rejected).
    again = rt.rest(
        "POST",
        f"ticket/{ticket_id}/correspond",
        user=rt.vendor_user,
        json={"Content": "Still on it.", "ContentType": "text/plain"},
    )
    assert (again.status_code, again.json()) == (201, ["Correspondence added"])
    assert rt.rest("GET", f"ticket/{ticket_id}").json()["Status"] == "stalled"

    comment = rt.rest(
        "POST",
        f"ticket/{ticket_id}/comment",
        json={"Content": "ccwatch: loss down to 5 % (major)", "ContentType": "text/plain"},
    )
    assert (comment.status_code, comment.json()) == (201, ["Comments added"])
    assert rt.rest("GET", f"ticket/{ticket_id}").json()["Status"] == "stalled"

    resolve = rt.rest(
        "POST",
        f"ticket/{ticket_id}/comment",
        json={"Content": "ccwatch: recovered", "ContentType": "text/plain", "Status": "resolved"},
    )
    assert (resolve.status_code, resolve.json()) == (
        201,
        ["Comments added", "Status changed from 'stalled' to 'resolved'"],
    )
    resolved = rt.rest("GET", f"ticket/{ticket_id}").json()
    assert resolved["Status"] == "resolved"
    assert resolved["Resolved"] != "1970-01-01T00:00:00Z"

    history = rt.rest(
        "GET",
        f"ticket/{ticket_id}/history",
        params={"fields": "Type,Creator,Created,Field,OldValue,NewValue,Data", "per_page": 100},
    )
    assert history.status_code == 200
    assert history.json()["total"] is None  # history pages are not counted
    items = history.json()["items"]
    assert [int(i["id"]) for i in items] == sorted(int(i["id"]) for i in items)
    seen = [
        (i["Type"], i["Creator"]["id"], i["Field"], i["OldValue"], i["NewValue"]) for i in items
    ]
    assert seen == [
        ("Create", "ccwatch", "", "", ""),
        ("EmailRecord", "RT_System", "", "", ""),  # the auto-reply to the requestor
        ("Correspond", "vendor", "", "", ""),
        ("EmailRecord", "RT_System", "", "", ""),  # the reply, mailed to the requestor
        ("Status", "RT_System", "Status", "new", "open"),
        ("Status", "ccwatch", "Status", "open", "stalled"),
        ("Correspond", "vendor", "", "", ""),
        ("EmailRecord", "RT_System", "", "", ""),
        ("Comment", "ccwatch", "", "", ""),
        ("Comment", "ccwatch", "", "", ""),
        ("Status", "ccwatch", "Status", "stalled", "resolved"),
    ]

    # The vendor's first reply: the first Correspond by someone other than ccwatch and RT.
    first_reply = next(
        i
        for i in items
        if i["Type"] == "Correspond" and i["Creator"]["id"] not in (rt.ccwatch_user, "RT_System")
    )
    assert (first_reply["Creator"]["id"], first_reply["Data"]) == (rt.vendor_user, "No Subject")
    # ... and the same, asked directly with TransactionSQL.
    by_sql = rt.rest(
        "GET",
        "transactions",
        params={
            "query": f"ObjectType = 'RT::Ticket' AND ObjectId = {ticket_id} "
            f"AND Type = 'Correspond' AND Creator != '{rt.ccwatch_user}'",
            "orderby": "id",
            "fields": "Creator,Created",
        },
    )
    assert by_sql.status_code == 200
    replies = [(i["id"], i["Creator"]["id"]) for i in by_sql.json()["items"]]
    assert replies[0] == (first_reply["id"], rt.vendor_user)
    assert [user for _, user in replies] == [rt.vendor_user, rt.vendor_user]
    assert by_sql.json()["items"][0]["Created"] == first_reply["Created"]

    text = rt.rest(
        "GET",
        f"transaction/{first_reply['id']}/attachments",
        params={"fields": "ContentType,Content"},
    )
    assert [(a["ContentType"], a["Content"]) for a in text.json()["items"]] == [
        ("text/plain", "We are looking into the ACD.")
    ]
    # A single attachment carries its content base64-encoded.
    (attachment_url,) = [
        link["_url"]
        for link in rt.rest("GET", f"transaction/{first_reply['id']}").json()["_hyperlinks"]
        if link["ref"] == "attachment"
    ]
    raw = rt.rest("GET", attachment_url).json()
    assert base64.b64decode(raw["Content"]) == b"We are looking into the ACD."

    # The mail RT would have sent went to the session's mbox, not out.
    subjects = [
        str(message["Subject"])
        for mbox in (rt.workdir / "var").glob("*.mbox")
        for message in mailbox.mbox(mbox)
        if str(message["X-RT-Ticket"]) == f"ccwatch-test #{ticket_id}"
    ]
    assert sorted(subjects) == sorted(
        [
            f"[ccwatch-test #{ticket_id}] AutoReply: [ccwatch blr1] acd: critical ({key})",
            f"[ccwatch-test #{ticket_id}] [ccwatch blr1] acd: critical ({key})",
            f"[ccwatch-test #{ticket_id}] [ccwatch blr1] acd: critical ({key})",
        ]
    )


def test_dedup_key_search_is_exact_and_not_enforced_unique(rt_server: RTServer) -> None:
    rt = rt_server
    key = f"blr1-ivr-{uuid.uuid4().hex[:8]}"
    first = create(rt, key)
    create(rt, f"{key}-2")
    assert [i["id"] for i in search(rt, key)["items"]] == [str(first)]
    # RT accepts a second ticket with the same key: the adapter must look before it creates.
    second = create(rt, key)
    assert [i["id"] for i in search(rt, key)["items"]] == [str(first), str(second)]


def test_error_bodies(rt_server: RTServer) -> None:
    rt = rt_server
    ticket_id = create(rt, f"blr1-dialer-{uuid.uuid4().hex[:8]}", Requestor="ccwatch@ccwatch.test")

    for token in ("1-999-" + "0" * 32, rt.ccwatch_token[:-1] + "x"):
        bad = rt.rest("GET", f"ticket/{ticket_id}", token=token)
        assert (bad.status_code, bad.json()) == (401, {"message": "Unauthorized"})
    anonymous = httpx.get(f"{rt.rest2}/ticket/{ticket_id}", timeout=30)
    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "Unauthorized"})

    missing = rt.rest("GET", "ticket/999999")
    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})

    malformed = rt.rest(
        "POST", "ticket", content=b'{"Queue":', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["message"].startswith("JSON parse error: malformed JSON string")

    bad_sql = rt.rest("GET", "tickets", params={"query": "Queue = "})
    assert bad_sql.status_code == 400
    assert bad_sql.json()["message"].startswith("Incomplete query")
    unknown_field = rt.rest("GET", "tickets", params={"query": "Bogus = 1"})
    assert unknown_field.status_code == 400
    assert unknown_field.json()["message"].startswith("Unknown field: Bogus")

    forbidden = rt.rest(
        "POST", "ticket", json={"Queue": "General", "Subject": "not ccwatch's queue"}
    )
    assert (forbidden.status_code, forbidden.json()) == (
        403,
        {"message": "No permission to create tickets in the queue 'General'"},
    )

    # An invalid status is a 200 whose message says so; nothing changes.
    invalid = rt.rest("PUT", f"ticket/{ticket_id}", json={"Status": "bogus"})
    assert (invalid.status_code, invalid.json()) == (
        200,
        [f"Ticket {ticket_id}: Status 'bogus' isn't a valid status for this ticket."],
    )
    assert rt.rest("GET", f"ticket/{ticket_id}").json()["Status"] == "new"

    stale = rt.rest(
        "PUT", f"ticket/{ticket_id}", json={"Subject": "x"}, headers={"If-Match": '"1"'}
    )
    assert (stale.status_code, stale.json()) == (412, {"message": "Precondition Failed"})

    # The vendor may not see ccwatch's auto-reply records (no ShowOutgoingEmail).
    items = rt.rest(
        "GET", f"ticket/{ticket_id}/history", params={"fields": "Type", "per_page": 100}
    ).json()["items"]
    vendor_view = rt.rest(
        "GET", f"ticket/{ticket_id}/history", user=rt.vendor_user, params={"fields": "Type"}
    ).json()["items"]
    assert "EmailRecord" not in [i["Type"] for i in vendor_view]
    hidden = [i["id"] for i in items if i["Type"] == "EmailRecord"]
    assert len(hidden) == 1  # the auto-reply
    for txn in hidden:
        seen = rt.rest("GET", f"transaction/{txn}", user=rt.vendor_user)
        assert (seen.status_code, seen.json()) == (403, {"message": "Forbidden"})
