"""What a finished run writes besides metrics.json: captions.json for every test image (caption,
references, its CIDEr-D and BLEU counts: a sweep report resamples images from them without
decoding again; the image's path and, for the first few, their attention figure), and those
attention figures with examples.md, the page that shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from captioner.data.datamodule import CaptionDataModule
from captioner.inference.attention_figure import plot_attention
from captioner.paths import write_atomically
from captioner.records.caption_entry import CaptionEntry, write_caption_entries
from captioner.records.run_folder import RunFolder
from captioner.sources import ImageRecord
from captioner.training.module import CaptionModule


def write_run_outputs(folder: RunFolder, module: CaptionModule, datamodule: CaptionDataModule,
                      records: list[ImageRecord], examples: int) -> list[dict[str, Any]]:
    """captions.json, the attention figures and examples.md; returns the examples shown."""
    features = datamodule.features
    references = datamodule.references(datamodule.eval_split("test"))
    written = module.last_captions["test"]
    per_image = module.last_per_image["test"]
    path_of = {r.image_id: r.path for r in records}
    grid = tuple(features.attrs.get("top_grid") or features.attrs.get("grid", (1, features.regions)))
    shown = []
    for index, weights in list(module.test_attention.items())[:examples]:
        image_id = features.image_ids[index]
        words = written[index].split() + ["<end>"]
        weights = weights[: len(words)].float().numpy()  # bf16-mixed runs keep bfloat16 maps
        figure = None
        if Path(path_of.get(image_id, "")).is_file():
            figure = plot_attention(path_of[image_id], words[: len(weights)], weights, grid,
                                    folder.plots / f"attention_{index}.png")
        shown.append({"image_id": image_id, "caption": written[index],
                      "references": references[index], "figure": str(figure) if figure else None,
                      "image": str(path_of[image_id]) if figure else None})
    write_examples_page(folder, shown)
    figures = {e["image_id"]: str(Path(e["figure"]).relative_to(folder.path)) for e in shown if e["figure"]}
    entries = []
    for index, text in written.items():
        image_id = features.image_ids[index]
        scores = per_image[index]
        entries.append(CaptionEntry(image_id=image_id, caption=text, references=list(references[index]),
                                    cider=scores["cider"], bleu_counts=scores["bleu_counts"],
                                    image=str(path_of.get(image_id, "")), attention=figures.get(image_id)))
    write_caption_entries(folder.captions, entries)
    return shown


def write_examples_page(folder: RunFolder, examples: list[dict[str, Any]]) -> None:
    """examples.md: what W&B's examples table shows, for anyone reading the run folder."""
    lines = ["# Test examples", ""]
    for example in examples:
        lines += [f"## {example['image_id']}", ""]
        if example["figure"]:
            lines += [f"![attention]({Path(example['figure']).relative_to(folder.path)})", ""]
        lines += [f"**generated:** {example['caption']}", "", "references:", ""]
        lines += [f"- {reference}" for reference in example["references"]] + [""]
    write_atomically(folder.examples, "\n".join(lines))
