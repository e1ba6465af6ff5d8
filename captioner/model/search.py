"""Caption search over a trained decoder, batched over images: greedy and beam search."""

from __future__ import annotations

import torch

from captioner.model.decoder import CaptionDecoder


@torch.no_grad()
def greedy_decode(decoder: CaptionDecoder, features: torch.Tensor, max_length: int, start_id: int,
                  end_id: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step for every image at once.

    Returns token ids (B, L) without `<start>`, `<end>` included where emitted and `<pad>`
    after it, with L <= max_length + 1, and the attention weights (B, L, R) of each step.
    """
    regions, keys, state = decoder.prepare(features)
    batch = features.shape[0]
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
    words, attention = [], []
    for _ in range(max_length + 1):  # max_length words, then room for <end>
        logits, state, weights = decoder.step(tokens, regions, keys, state)
        logits[:, [pad_id, start_id]] = float("-inf")  # never words of a caption
        tokens = logits.argmax(dim=-1).masked_fill(finished, pad_id)
        words.append(tokens)
        attention.append(weights.masked_fill(finished.unsqueeze(1), 0.0))
        finished |= tokens == end_id
        if finished.all():
            break
    return torch.stack(words, dim=1), torch.stack(attention, dim=1)


def _repeats_trigram(history: list[int], token: int) -> bool:
    if len(history) < 2:
        return False
    trigram = (history[-2], history[-1], token)
    return any(tuple(history[i:i + 3]) == trigram for i in range(len(history) - 2))


@torch.no_grad()
def beam_search(decoder: CaptionDecoder, features: torch.Tensor, max_length: int, start_id: int,
                end_id: int, pad_id: int = 0, beam_size: int = 3, length_penalty: float = 0.0,
                block_trigram_repeats: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely caption of each image under a beam of `beam_size`, all images at once.

    Same output as `greedy_decode` (which `beam_size=1` reproduces token for token). A beam that
    never emits `<end>` is cut at `max_length + 1` tokens, so every image gets a caption.
    Finished beams are ranked by log-probability / ((5 + length) / 6) ** length_penalty (GNMT).
    """
    batch, k = features.shape[0], beam_size
    regions, keys, state = decoder.prepare(features)
    # Every image's beams side by side: row b * k + j is beam j of image b.
    regions, keys = regions.repeat_interleave(k, 0), keys.repeat_interleave(k, 0)
    state = tuple(s.repeat_interleave(k, 0) for s in state)
    device = features.device
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start, so the first step does not pick k copies
    tokens = torch.full((batch * k,), start_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    words: list[torch.Tensor] = []
    attention: list[torch.Tensor] = []
    for _ in range(max_length + 1):
        logits, state, weights = decoder.step(tokens, regions, keys, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs[:, [pad_id, start_id]] = float("-inf")  # never words of a caption
        # A finished beam continues only with <pad>, at no cost, so its score stays put.
        log_probs[finished] = float("-inf")
        log_probs[finished, pad_id] = 0.0
        if block_trigram_repeats and words:
            history = torch.stack(words, dim=1).tolist()
            for row in range(batch * k):
                if not finished[row]:
                    for token in range(log_probs.shape[1]):
                        # <end> is never blocked: when every word would repeat, the caption ends.
                        if token != end_id and _repeats_trigram(history[row], token):
                            log_probs[row, token] = float("-inf")
        vocab = log_probs.shape[1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        scores, flat = candidates.topk(k, dim=1)
        origin = (flat // vocab + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
        tokens = (flat % vocab).view(-1)
        state = tuple(s[origin] for s in state)
        words = [w[origin] for w in words] + [tokens]
        attention = [a[origin] for a in attention] + [weights[origin].masked_fill(
            finished[origin].unsqueeze(1), 0.0)]
        lengths = lengths[origin] + (~finished[origin]).float()
        finished = finished[origin] | (tokens == end_id)
        if finished.all():
            break
    normalised = scores.view(-1) / ((5.0 + lengths) / 6.0) ** length_penalty
    best = normalised.view(batch, k).argmax(dim=1) + torch.arange(batch, device=device) * k
    return torch.stack(words, dim=1)[best], torch.stack(attention, dim=1)[best]
