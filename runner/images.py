"""`anna-run images`: what anna-run used or built; `images prune`: our unused builds, never others'."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .image import BUILD_REPO

if TYPE_CHECKING:
    import docker

    from .store.base import Store

BUILD_LABEL = "io.anna-run.build"


def list_images(api: docker.APIClient, store: Store) -> list[dict[str, Any]]:
    """One row per image id: the names runs used, its size when the engine still has it, when a
    run last used it and how many runs did; plus builds no run in this store used yet."""
    rows: dict[str, dict[str, Any]] = {}
    for record in store.list_runs():
        if record.image is None or not record.image.id:
            continue
        row = rows.setdefault(
            record.image.id,
            {
                "id": record.image.id,
                "name": record.image.name,
                "digest": record.image.digest,
                "size": None,
                "present": False,
                "last_used": None,
                "runs": 0,
                "built": False,
            },
        )
        row["runs"] += 1
        row["last_used"] = max(row["last_used"] or "", record.started_at or record.created_at or "") or None
    for image in api.images(filters={"label": BUILD_LABEL}):
        rows.setdefault(
            image["Id"],
            {
                "id": image["Id"],
                "name": (image.get("RepoTags") or [BUILD_REPO])[0],
                "digest": None,
                "size": None,
                "present": False,
                "last_used": None,
                "runs": 0,
                "built": True,
            },
        )
    from .codecache import code_images

    for image in code_images(api):  # the code kept in the engine, one image per package and base
        rows.setdefault(
            image["id"],
            {
                "id": image["id"],
                "name": image["name"],
                "digest": None,
                "size": None,
                "present": True,
                "last_used": None,
                "runs": 0,
                "built": False,
                "code": True,
            },
        )
    for image_id, row in rows.items():
        with contextlib.suppress(Exception):
            info = api.inspect_image(image_id)
            row.update(size=info.get("Size"), present=True, built=BUILD_LABEL in (info["Config"].get("Labels") or {}))
    return sorted(rows.values(), key=lambda r: r["last_used"] or "", reverse=True)


def prune_builds(api: docker.APIClient, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove images anna-run made (by our labels) that no container, running or not, uses: the
    code images first (a code image is a child of its base, which could not go before it), then
    the builds."""
    from .codecache import code_images

    in_use = {c["ImageID"] for c in api.containers(all=True)}
    removed = []
    for image in code_images(api):
        if image["id"] in in_use:
            continue
        removed.append({"id": image["id"], "name": image["name"], "size": image["size"]})
        if not dry_run:
            with contextlib.suppress(Exception):
                api.remove_image(image["id"], force=False)
    code = {r["id"] for r in removed}
    for image in api.images(filters={"label": BUILD_LABEL}):
        if image["Id"] in code:
            continue
        if image["Id"] in in_use:
            continue
        removed.append({"id": image["Id"], "name": (image.get("RepoTags") or [image["Id"]])[0], "size": image["Size"]})
        if not dry_run:
            with contextlib.suppress(Exception):
                api.remove_image(image["Id"], force=False)
    return removed
