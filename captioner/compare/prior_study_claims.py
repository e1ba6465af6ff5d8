"""The prior study's claims, each judged on what a sweep measured: reproduced, not reproduced, or
not testable here (the sweep does not vary what the claim is about)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from captioner.compare.content_groups import GroupScore
from captioner.compare.effects import Effect
from captioner.records.sweep_runs import RunResult

# ImageNet top-1 (%) of each CNN's weights as their authors report them; the prior study's claim rests on it.
IMAGENET_TOP1 = {"vgg16": 71.6, "mobilenet_v2": 71.9, "resnet101": 77.4, "efficientnet_lite2": 77.5,
                 "inception_v3": 77.3, "inception_resnet_v2": 80.4}
REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"
PARTLY = "partly reproduced"  # the claim holds by one measure and not by the other


@dataclass(frozen=True)
class Verdict:
    claim: str
    answer: str
    evidence: str


def judge_claims(runs: Sequence[RunResult], factors: Sequence[str], effects: dict[str, list[Effect]],
                 by_group: dict[str, dict[Path, GroupScore]]) -> list[Verdict]:
    return [_stronger_cnn(effects), _lstm_like_gru(effects), _gru_faster(runs),
            _animals_over_people(runs, by_group), _people_with_inception_resnet(runs, by_group),
            _colours(runs, by_group), _datasets(factors)]


def _effect(effects: dict[str, list[Effect]], factor: str, level: str, metric: str) -> Effect | None:
    return next((e for e in effects.get(factor, []) if e.level == level and e.metric == metric
                 and e.images is not None), None)


def _described(effect: Effect) -> str:
    name = {"cider": "CIDEr-D", "bleu4": "BLEU-4"}[effect.metric]
    interval = effect.seeds or effect.images
    return (f"{name} {effect.level} - {effect.reference}: {interval.estimate:+.3f} "
            f"[{interval.low:+.3f}, {interval.high:+.3f}]")


def _stronger_cnn(effects: dict[str, list[Effect]]) -> Verdict:
    claim = ("\"From among Inception and VGG16, Inception gave significantly better results\", explained "
             "by ImageNet accuracy (79% against 71%)")
    cnn_effects = [e for e in effects.get("cnn", []) if e.images is not None]
    known = {e.reference for e in cnn_effects} | {e.level for e in cnn_effects}
    known = {c for c in known if c in IMAGENET_TOP1}
    if len(known) < 2:
        return Verdict(claim, NOT_TESTABLE, "the sweep does not compare two CNNs of known ImageNet accuracy")
    strong, weak = max(known, key=IMAGENET_TOP1.get), min(known, key=IMAGENET_TOP1.get)
    found = [e for e in cnn_effects if {e.level, e.reference} == {strong, weak} and e.metric == "cider"]
    if not found:
        return Verdict(claim, NOT_TESTABLE, f"no matched runs of {strong} and {weak}")
    effect = found[0]
    interval = effect.seeds or effect.images
    better = interval.low > 0 if effect.level == strong else interval.high < 0
    tested = (f"as: {strong} ({IMAGENET_TOP1[strong]}%) against {weak} ({IMAGENET_TOP1[weak]}%); "
              f"{_described(effect)}")
    return Verdict(claim, REPRODUCED if better else NOT_REPRODUCED, tested)


def _lstm_like_gru(effects: dict[str, list[Effect]]) -> Verdict:
    claim = "\"LSTM did not show any significant difference\" from GRU"
    found = [e for e in (_effect(effects, "rnn", "lstm", m) or _effect(effects, "rnn", "gru", m)
                         for m in ("cider", "bleu4")) if e is not None]
    if not found:
        return Verdict(claim, NOT_TESTABLE, "the sweep does not compare rnn=gru and rnn=lstm")
    same = not any((e.seeds or e.images).significant for e in found)
    return Verdict(claim, REPRODUCED if same else NOT_REPRODUCED, "; ".join(_described(e) for e in found))


def _gru_faster(runs: Sequence[RunResult]) -> Verdict:
    claim = "\"Training with GRU was fast\" (faster than LSTM)"
    times = {cell: [r.seconds_per_epoch for r in runs if r.overrides.get("rnn") == cell
                    and r.status == "completed" and r.seconds_per_epoch] for cell in ("gru", "lstm")}
    if not times["gru"] or not times["lstm"]:
        return Verdict(claim, NOT_TESTABLE, "the sweep does not time completed rnn=gru and rnn=lstm runs")
    gru, lstm = (sum(t) / len(t) for t in (times["gru"], times["lstm"]))
    return Verdict(claim, REPRODUCED if gru < lstm else NOT_REPRODUCED,
                   f"mean s/epoch: GRU {gru:.0f}, LSTM {lstm:.0f} (LSTM/GRU {lstm / gru:.2f}x; "
                   "one timing per run, same machine)")


def _group_values(runs: Sequence[RunResult], by_group: dict[str, dict[Path, GroupScore]], group: str,
                  measure: str, cnn: str | None = None) -> list[float]:
    """`measure` (recall or cider) of every run on `group`'s images, those of one cnn if given."""
    scores = by_group.get(group, {})
    values = [getattr(scores[run.path], measure) for run in runs if run.path in scores
              and (cnn is None or run.overrides.get("cnn") == cnn)]
    return [v for v in values if v is not None]


def _recalls(runs: Sequence[RunResult], by_group: dict[str, dict[Path, GroupScore]], group: str,
             cnn: str | None = None) -> list[float]:
    return _group_values(runs, by_group, group, "recall", cnn)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _ciders(runs: Sequence[RunResult], by_group: dict[str, dict[Path, GroupScore]], group: str,
            cnn: str | None = None) -> list[float]:
    return _group_values(runs, by_group, group, "cider", cnn)


def _animals_over_people(runs: Sequence[RunResult], by_group: dict[str, dict[Path, GroupScore]]) -> Verdict:
    claim = ("InceptionV3 \"recognize[s] animals very well, while has many problems with people\" "
             "(tested on every CNN of the sweep: CIDEr-D and recall on animal images against people images)")
    animals, people = _recalls(runs, by_group, "animals"), _recalls(runs, by_group, "people")
    if not animals or not people:
        return Verdict(claim, NOT_TESTABLE, "no test images of both animals and people (content groups)")
    lines = []
    for cnn in sorted({r.overrides.get("cnn", "-") for r in runs if r.path in by_group.get("animals", {})}):
        a, p = _recalls(runs, by_group, "animals", cnn), _recalls(runs, by_group, "people", cnn)
        a_cider, p_cider = _ciders(runs, by_group, "animals", cnn), _ciders(runs, by_group, "people", cnn)
        if a and p:
            scores = (f"CIDEr-D animals {_mean(a_cider):.2f}, people {_mean(p_cider):.2f}; "
                      if a_cider and p_cider else "")
            lines.append(f"{cnn}: {scores}recall animals {_mean(a):.2f}, people {_mean(p):.2f}")
    named = _mean(animals) > _mean(people)
    a_cider, p_cider = _ciders(runs, by_group, "animals"), _ciders(runs, by_group, "people")
    described = (_mean(a_cider) > _mean(p_cider)) if a_cider and p_cider else named
    answer = REPRODUCED if named and described else NOT_REPRODUCED if not (named or described) else PARTLY
    return Verdict(claim, answer, "; ".join(lines))


def _people_with_inception_resnet(runs: Sequence[RunResult],
                                  by_group: dict[str, dict[Path, GroupScore]]) -> Verdict:
    claim = "InceptionResNetV2 \"recognize[s] people much better\" (than InceptionV3)"
    better, base = (_recalls(runs, by_group, "people", c) for c in ("inception_resnet_v2", "inception_v3"))
    if not better or not base:
        return Verdict(claim, NOT_TESTABLE, "needs cnn=inception_resnet_v2 and cnn=inception_v3 with "
                       "ImageNet weights in one sweep (neither can be had offline here)")
    holds = _mean(better) > _mean(base)
    return Verdict(claim, REPRODUCED if holds else NOT_REPRODUCED,
                   f"people recall: inception_resnet_v2 {_mean(better):.2f}, inception_v3 {_mean(base):.2f}")


def _colours(runs: Sequence[RunResult], by_group: dict[str, dict[Path, GroupScore]]) -> Verdict:
    claim = ("\"Both networks have problems recognizing colors\" (colours named less often than the "
             "other groups)")
    colours = _recalls(runs, by_group, "colours")
    others = [r for g in by_group if g != "colours" for r in _recalls(runs, by_group, g)]
    if not colours or not others:
        return Verdict(claim, NOT_TESTABLE, "no test images whose references name colours (content groups)")
    holds = _mean(colours) < _mean(others)
    return Verdict(claim, REPRODUCED if holds else NOT_REPRODUCED,
                   f"mean recall: colours {_mean(colours):.2f}, other groups {_mean(others):.2f}")


def _datasets(factors: Sequence[str]) -> Verdict:
    claim = "The prior study's comparison of datasets (COCO, Flickr8k, IAPR TC-12)"
    if "dataset" in factors:
        return Verdict(claim, NOT_TESTABLE, "scores on different test sets are not comparable as "
                       "differences; see the runs table for each dataset's own scores")
    return Verdict(claim, NOT_TESTABLE, "the sweep trains on one dataset")
