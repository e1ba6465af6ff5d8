"""The prior study's claims, each answered by the report's verdicts (`sweep_verdicts.py`), so every
answer follows the one declared rule (`conf/claims.yaml`):

- reproduced / not reproduced: the verdicts the claim rests on say so;
- inconclusive: they do not decide it (too few seeds, or intervals that neither exclude 0 nor fit
  inside the margin);
- partly reproduced: the claim holds for some CNNs and fails for others;
- not testable here: the sweep does not vary what the claim is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from captioner.compare.decision_rule import BETTER, EQUIVALENT, WORSE
from captioner.compare.effects import RATIO
from captioner.compare.sweep_verdicts import Judged, SweepVerdicts
from captioner.records.sweep_runs import RunResult

# ImageNet top-1 (%) of each CNN's weights as their authors report them; the prior study's claim rests on it.
IMAGENET_TOP1 = {"vgg16": 71.6, "mobilenet_v2": 71.9, "resnet101": 77.4, "efficientnet_lite2": 77.5,
                 "inception_v3": 77.3, "inception_resnet_v2": 80.4}
REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"
PARTLY = "partly reproduced"  # holds for some CNNs, fails for others
UNDECIDED = "inconclusive"


@dataclass(frozen=True)
class ClaimAnswer:
    claim: str
    answer: str
    evidence: str


def described(judged: Judged, beside: bool = True) -> str:
    """"CIDEr-D a - b: +0.041 [+0.017, +0.062], **better**" and the score beside, if any; the
    intervals at the rule's confidence (no verdict: no estimate either)."""
    confidence = judged.verdict.confidence if judged.verdict is not None else 0.95

    def one(comparison, verdict) -> str:
        name = {"cider": "CIDEr-D", "bleu4": "BLEU-4", "ratio": "model/human CIDEr-D",
                RATIO: "model/human CIDEr-D", "share": "colour", "speed": ""}.get(comparison.metric,
                                                                                   comparison.metric)
        where = f" ({comparison.within})" if comparison.within else ""
        if comparison.untestable:
            return f"{name} {comparison.label}{where}: not testable ({comparison.untestable})".strip()
        if comparison.estimate is None:
            return f"{name} {comparison.label}{where}: no seed with every cell completed".strip()
        low, high = comparison.estimate.interval(confidence)
        value = comparison.estimate.value
        text = f"{name} {comparison.label}{where}: {value:+.3f} [{low:+.3f}, {high:+.3f}]".strip()
        return text + (f", **{verdict.word}**" if verdict is not None else "")
    text = one(judged.comparison, judged.verdict)
    if beside and judged.beside is not None:
        text += "; " + one(judged.beside, None)
    return text


def _answer(words: Sequence[str], holds: str, fails: Sequence[str]) -> str:
    """One answer from several verdicts (one per CNN): all `holds` -> reproduced; all in `fails` ->
    not reproduced; a mix of the two -> partly; anything undecided -> inconclusive."""
    if words and all(w == holds for w in words):
        return REPRODUCED
    if words and all(w in fails for w in words):
        return NOT_REPRODUCED
    if any(w == holds for w in words) and any(w in fails for w in words) and \
            all(w == holds or w in fails for w in words):
        return PARTLY
    return UNDECIDED


def judge_claims(runs: Sequence[RunResult], factors: Sequence[str], verdicts: SweepVerdicts
                 ) -> list[ClaimAnswer]:
    return [_stronger_cnn(verdicts), _lstm_like_gru(verdicts), _gru_faster(runs, verdicts),
            _animals_over_people(verdicts), _people_with_inception_resnet(verdicts), _colours(verdicts),
            _datasets(factors, verdicts)]


def _main_effect(verdicts: SweepVerdicts, factor: str, a: str, b: str) -> Judged | None:
    return next((j for j in verdicts.effects.get(factor, []) if j.comparison.kind == "effect"
                 and j.comparison.label in (f"{a} - {b}", f"{b} - {a}")), None)


def _word(judged: Judged | None) -> str:
    return judged.verdict.word if judged is not None and judged.verdict is not None else UNDECIDED


def _stronger_cnn(verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = ("\"From among Inception and VGG16, Inception gave significantly better results\", explained "
             "by ImageNet accuracy (79% against 71%)")
    known = [c for c in verdicts.cells.levels.get("cnn", []) if c in IMAGENET_TOP1]
    if len(known) < 2:
        return ClaimAnswer(claim, NOT_TESTABLE,
                           "the sweep does not compare two CNNs of known ImageNet accuracy")
    strong, weak = max(known, key=IMAGENET_TOP1.get), min(known, key=IMAGENET_TOP1.get)
    effect = _main_effect(verdicts, "cnn", strong, weak)
    if effect is None or effect.verdict is None:
        return ClaimAnswer(claim, NOT_TESTABLE, f"no matched runs of {strong} and {weak}")
    stronger_first = effect.comparison.label.startswith(strong)
    holds = BETTER if stronger_first else WORSE
    answer = _answer([effect.verdict.word], holds, [EQUIVALENT, WORSE if stronger_first else BETTER])
    within = [j for j in verdicts.effects["cnn"] if j.comparison.kind == "within"
              and j.comparison.label == effect.comparison.label]
    tested = (f"as: {strong} ({IMAGENET_TOP1[strong]}%) against {weak} ({IMAGENET_TOP1[weak]}%); "
              + "; ".join([described(effect), *(described(j, beside=False) for j in within)]))
    return ClaimAnswer(claim, answer, tested)


def _lstm_like_gru(verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = ("\"LSTM did not show any significant difference\" from GRU (judged as: equivalent within "
             "the margin)")
    effect = _main_effect(verdicts, "rnn", "lstm", "gru")
    if effect is None or effect.verdict is None:
        return ClaimAnswer(claim, NOT_TESTABLE, "the sweep does not compare rnn=gru and rnn=lstm")
    within = [j for j in verdicts.effects["rnn"] if j.comparison.kind == "within"
              and j.comparison.label == effect.comparison.label]
    answer = _answer([effect.verdict.word], EQUIVALENT, [BETTER, WORSE])
    return ClaimAnswer(claim, answer,
                       "; ".join([described(effect), *(described(j, beside=False) for j in within)]))


def _gru_faster(runs: Sequence[RunResult], verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = "\"Training with GRU was fast\" (faster than LSTM)"
    times = {cell: [r.seconds_per_epoch for r in runs if r.overrides.get("rnn") == cell
                    and r.status == "completed" and r.seconds_per_epoch] for cell in ("gru", "lstm")}
    measured = ""
    if times["gru"] and times["lstm"]:
        gru, lstm = (sum(t) / len(t) for t in (times["gru"], times["lstm"]))
        measured = (f"s/epoch as the runs measured it, not judged (one timing per run, in the order the runs "
                    f"happened to run): GRU {gru:.0f}, LSTM {lstm:.0f}")
    if verdicts.speed is None:
        record = f"the interleaved timing record is not testable ({verdicts.speed_untestable})" \
            if verdicts.speed_untestable else "no interleaved timing record"
        return ClaimAnswer(claim, NOT_TESTABLE if not measured else UNDECIDED,
                           (measured + "; " if measured else "") + record +
                           " (speed.json: `python benchmarks/cell_speed.py --out <sweep>/speed.json`)")
    record = verdicts.speed_record
    evidence = (f"interleaved timings, {len(record.seconds['gru'])} per arm ({record.machine}; "
                f"`{record.command}`): {described(verdicts.speed)}" + (f"; {measured}" if measured else ""))
    return ClaimAnswer(claim, _answer([verdicts.speed.verdict.word], BETTER, [EQUIVALENT, WORSE]), evidence)


def _animals_over_people(verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = ("InceptionV3 \"recognize[s] animals very well, while has many problems with people\" "
             "(tested on every CNN of the sweep: model/human CIDEr-D on animal images against people images)")
    found = [j for j in verdicts.groups if j.comparison.label in ("animals - people", "people - animals")]
    if found and all(j.verdict is None for j in found) and (reasons := _untestable(found)):
        return ClaimAnswer(claim, NOT_TESTABLE, reasons)
    if not found or all(j.verdict is None for j in found):
        return ClaimAnswer(claim, NOT_TESTABLE, "no test images of both animals and people (content groups)")
    words = []
    for judged in found:
        animals_first = judged.comparison.label.startswith("animals")
        holds, against = (BETTER, WORSE) if animals_first else (WORSE, BETTER)
        words.append({holds: BETTER, against: WORSE}.get(_word(judged), _word(judged)))
    return ClaimAnswer(claim, _answer(words, BETTER, [WORSE, EQUIVALENT]),
                       "; ".join(described(j) for j in found))


def _people_with_inception_resnet(verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = "InceptionResNetV2 \"recognize[s] people much better\" (than InceptionV3)"
    levels = verdicts.cells.levels.get("cnn", [])
    if "inception_resnet_v2" not in levels or "inception_v3" not in levels:
        return ClaimAnswer(claim, NOT_TESTABLE, "needs cnn=inception_resnet_v2 and cnn=inception_v3 with "
                           "ImageNet weights in one sweep (neither can be had offline here)")
    effect = _main_effect(verdicts, "cnn", "inception_resnet_v2", "inception_v3")
    first = effect is not None and effect.comparison.label.startswith("inception_resnet")
    better, against = (BETTER, WORSE) if first else (WORSE, BETTER)
    return ClaimAnswer(claim, _answer([_word(effect)], better, [EQUIVALENT, against]),
                       (described(effect) if effect else "no matched runs") + " (all images; a people-only "
                       "comparison between CNNs is not built yet)")


def _colours(verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = ("\"Both networks have problems recognizing colors\" (judged as: the colours a caption names are "
             "right less often than a person's)")
    found = [j for j in verdicts.colours if j.verdict is not None]
    if not found:
        return ClaimAnswer(claim, NOT_TESTABLE, _untestable(verdicts.colours)
                           or "no test images whose references name colours (content groups)")
    return ClaimAnswer(claim, _answer([j.verdict.word for j in found], WORSE, [EQUIVALENT, BETTER]),
                       "; ".join(described(j) for j in found))


def _untestable(judged: Sequence[Judged]) -> str:
    """Why these comparisons cannot be made at all ("": they can), e.g. no human baseline."""
    return "; ".join(dict.fromkeys(j.comparison.untestable for j in judged if j.comparison.untestable))


def _datasets(factors: Sequence[str], verdicts: SweepVerdicts) -> ClaimAnswer:
    claim = "The prior study's comparison of datasets (COCO, Flickr8k, IAPR TC-12)"
    if "dataset" not in factors:
        return ClaimAnswer(claim, NOT_TESTABLE, "the sweep trains on one dataset")
    effects = [j for j in verdicts.effects.get("dataset", []) if j.comparison.kind == "effect"]
    return ClaimAnswer(claim, "measured" if effects else NOT_TESTABLE,
                       "judged on each dataset's model/human CIDEr-D, never on raw differences between test "
                       "sets: " + ("; ".join(described(j) for j in effects) or "no matched runs"))
