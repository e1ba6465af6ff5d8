"""The report's per-image comparison as a W&B table, in the sweep's W&B group (runs logged with
`logger=wandb`): one row per test image, its photo and references, every run's caption and
CIDEr-D, and how much the runs disagree. Online or offline as the sweep's runs went."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote


def log_comparison_table(sweep_dir: Path, data: dict[str, Any], group: str, project: str = "captioner",
                         entity: str | None = None, mode: str = "offline") -> Any:
    """A W&B run `<group>-comparison` holding the table, `mode` (disabled, offline or online) as the
    sweep's runs went (offline: in `<sweep_dir>/wandb/`); returns the finished run."""
    import wandb

    run = wandb.init(project=project, entity=entity, group=group, name=f"{group}-comparison",
                     job_type="comparison", dir=str(sweep_dir),
                     mode=mode,
                     reinit="finish_previous")
    labels = data["runs"]
    columns = ["image_id", "photo", "references", "groups", "disagreement",
               *(f"{label}: {what}" for label in labels for what in ("caption", "CIDEr-D"))]
    table = wandb.Table(columns=columns)
    for image in data["images"]:
        photo = sweep_dir / unquote(image["photo"]) if image.get("photo") else None  # a URL in the page
        cells = [image["id"], wandb.Image(str(photo)) if photo and photo.is_file() else None,
                 "\n".join(image["references"]), ", ".join(image["groups"]), round(image["disagreement"], 4)]
        for caption, cider in zip(image["captions"], image["cider"], strict=True):
            cells += [caption, cider]
        table.add_data(*cells)
    run.log({"comparison/test_images": table})
    run.finish()
    return run
