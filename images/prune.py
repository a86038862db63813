"""`fab prune-templates`: delete old template images, never one a server or a Heat stack uses."""

from __future__ import annotations

import sys

from images import template
from images.bake import BakeError, _props
from images.properties import P_NAME, P_STATE, STATE_COMPLETE


def images_in_use(conn) -> tuple[dict[str, str], list[str]]:
    """Image ids (and names) that servers boot or Heat stacks name, each with who uses it
    (``server NAME`` / ``stack NAME``); plus notes on what was checked."""
    import openstack.exceptions

    used: dict[str, str] = {}
    notes = []
    for s in conn.compute.servers(details=True):
        img = s.image or {}
        image_id = img.get("id") if isinstance(img, dict) else getattr(img, "id", None)
        if image_id:
            used.setdefault(image_id, f"server {s.name}")
    notes.append("servers checked")
    try:
        conn.session.get_endpoint(service_type="orchestration", interface="public")
    except Exception:  # noqa: BLE001 - no orchestration service in the catalog
        notes.append("no orchestration service: stacks not checked (servers were)")
        return used, notes
    # The list carries no parameters, and a template names its image by `get_param`: read each
    # stack (nested ones too: a scaling group's member template has the id written out).
    for stack_id, name in stacks(conn):
        try:
            values = stack_strings(conn, stack_id)
        except openstack.exceptions.NotFoundException:
            continue  # deleted since the list: it uses nothing any more
        except Exception as e:
            raise BakeError(f"cannot read stack {name}: {e}; not pruning") from e
        for v in values:
            used.setdefault(v, f"stack {name}")
    notes.append("stacks checked")
    return used, notes


def stacks(conn) -> list[tuple[str, str]]:
    """(id, name) of every stack of the project, nested ones included. Asked of Heat's API itself:
    openstacksdk's stack query knows no ``show_nested`` (its QueryParameters drop it without a
    word), so ``conn.orchestration.stacks(show_nested=True)`` lists the top-level stacks only."""
    resp = conn.orchestration.get("/stacks", params={"show_nested": True}, raise_exc=False)
    if resp.status_code >= 400:
        raise BakeError(f"cannot list stacks: HTTP {resp.status_code} {resp.text[:200]}; not pruning")
    return [(s["id"], s["stack_name"]) for s in resp.json().get("stacks", [])]


def stack_strings(conn, stack_id: str) -> list[str]:
    """Every string a stack names: its parameters' values and its template's strings (none for a
    stack deleted since it was listed: it uses nothing any more)."""
    st = conn.orchestration.get_stack(stack_id, resolve_outputs=False)
    if st is None:
        return []
    values = [str(v) for v in (st.parameters or {}).values()]
    return values + list(_strings(conn.orchestration.get_stack_template(st)))


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def prune(conn, keep: int, name: str | None = None, dry_run: bool = False, out=None) -> dict:
    """Delete all but the newest `keep` complete templates and every abandoned half-made one,
    except images a server or a stack uses. Returns {"deleted": [...], "kept": [...], "in_use": [...]}."""
    if keep < 1:
        raise BakeError(f"--keep {keep}: keep at least 1 template")
    t = template.load()
    name = name or t.name
    ours = [i for i in conn.image.images(owner=conn.current_project_id) if _props(i).get(P_NAME) == name]
    complete = sorted(
        [i for i in ours if _props(i).get(P_STATE) == STATE_COMPLETE],
        key=lambda i: i.created_at or "",
        reverse=True,
    )
    half = [
        i
        for i in ours
        if _props(i).get(P_STATE) != STATE_COMPLETE and i.status != "saving" and i.status != "queued"
    ]
    out = out or sys.stderr
    used, notes = images_in_use(conn)
    result = {"kept": [i.name for i in complete[:keep]], "deleted": [], "in_use": [], "checked": notes}
    for img in complete[keep:] + half:
        user = used.get(img.id) or used.get(img.name)
        if user:
            result["in_use"].append(img.name)
            print(f"[prune] keeping {img.name} ({img.id}): in use by {user}", file=out)
            continue
        print(f"[prune] {'would delete' if dry_run else 'deleting'} {img.name} ({img.id})", file=out)
        if not dry_run:
            conn.image.delete_image(img.id, ignore_missing=True)
        result["deleted"].append(img.name)
    return result
