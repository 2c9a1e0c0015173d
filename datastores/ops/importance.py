"""Data importance of retrieved chunks (Lyu et al., "Improving Retrieval-Augmented Large Language
Models via Data Importance Learning", 2023).

Each chunk ``i`` is kept in the retrieval corpus with probability ``w_i``. For one validation
question whose candidates are ranked ``1..M`` by the retriever, the additive top-K utility of a
corpus subset ``S`` is ``U(S) = (1/K) Σ_{i ∈ topK(S)} u_i``, with ``u_i`` the utility of chunk ``i``
alone (here an answer metric of ``evaluators.answers``). Its multilinear extension is

    Ũ(w) = E_{S~w}[U(S)] = (1/K) Σ_i u_i w_i P(A_i < K),

where ``A_i`` counts the kept candidates ranked above ``i`` (a Poisson-binomial variable). The
importance of chunk ``i`` is the partial derivative ``∂Ũ/∂w_i = E[U(S ∪ {i}) − U(S \\ {i})]``:

    ∂Ũ/∂w_i = (1/K) [u_i P(A_i < K) − Σ_{l>i} u_l w_l P(A_{l,−i} = K−1)].

Both terms come from two dynamic programmes over the ranking (forward: distribution of ``A_i``
truncated at ``K``; backward: ``G_i(m) = Σ_{l>i} u_l w_l P(#kept among i+1..l−1 = m)``), so the
exact value and gradient cost ``O(M·K)`` per question, vectorised over questions. The sampled
approximation averages ``U(S ∪ {i}) − U(S \\ {i})`` over subsets drawn from ``w``. At ``w = 0.5``
the gradient is the Banzhaf value of the chunk. Chunks with negative importance push answers out
of the top-K (wrong or distracting chunks); pruning them raises the expected utility.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from datastores.errors import UserError

METHODS = ("exact", "sampled")


def multilinear_gradient(utilities: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``Ũ`` [Q] and ``∂Ũ/∂w`` [Q, M] for candidates in rank order (column 0 ranked best)."""
    u = np.atleast_2d(np.asarray(utilities, dtype=np.float64))
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), u.shape)
    if k < 1:
        raise UserError(f"k must be at least 1 (got {k})")
    if np.any((w < 0) | (w > 1)):
        raise UserError("weights must lie in [0, 1]")
    q, m = u.shape
    before = np.zeros((q, m, k))          # before[:, i, a] = P(A_i = a), a < k
    dist = np.zeros((q, k))
    dist[:, 0] = 1.0
    for i in range(m):
        before[:, i] = dist
        shifted = np.zeros_like(dist)
        shifted[:, 1:] = dist[:, :-1]
        dist = (1.0 - w[:, i, None]) * dist + w[:, i, None] * shifted
    p_top = before.sum(axis=2)            # P(A_i < k)
    value = (u * w * p_top).sum(axis=1) / k
    grad = np.zeros((q, m))
    after = np.zeros((q, k))              # G_i(m)
    for i in range(m - 1, -1, -1):
        grad[:, i] = (u[:, i] * p_top[:, i] - (before[:, i] * after[:, ::-1]).sum(axis=1)) / k
        shifted = np.zeros_like(after)
        shifted[:, 1:] = after[:, :-1]
        after = (1.0 - w[:, i, None]) * after + w[:, i, None] * shifted
        after[:, 0] += u[:, i] * w[:, i]
    return value, grad


def sampled_gradient(utilities: np.ndarray, weights: np.ndarray, k: int, samples: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """Monte Carlo estimate of ``∂Ũ/∂w`` [Q, M]: the mean over subsets ``S ~ w`` of
    ``U(S ∪ {i}) − U(S \\ {i})`` for every candidate ``i`` at once."""
    u = np.atleast_2d(np.asarray(utilities, dtype=np.float64))
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), u.shape)
    if samples < 1:
        raise UserError(f"samples must be at least 1 (got {samples})")
    rng = np.random.default_rng(seed)
    q, m = u.shape
    rows = np.arange(q)
    padded = np.concatenate([u, np.zeros((q, 1))], axis=1)  # column m: "no such element" -> utility 0
    total = np.zeros((q, m))
    for _ in range(samples):
        kept = rng.random((q, m)) < w
        count = np.cumsum(kept, axis=1)
        above = count - kept                               # kept candidates ranked above i
        def position(n: int) -> np.ndarray:               # rank of the n-th kept candidate, or m
            hit = kept & (count == n)
            return np.where(hit.any(axis=1), hit.argmax(axis=1), m)
        kth, next_kth = position(k), position(k + 1)
        # the k-th best of S \ {i}: S's (k+1)-th when i itself is among S's top k
        displaced = np.where(kept & (above < k), next_kth[:, None], kth[:, None])
        total += np.where(above < k, u - padded[rows[:, None], displaced], 0.0) / k
    return total / samples


@dataclass(frozen=True)
class ImportanceResult:
    """Importance (mean ∂Ũ/∂w over validation questions, or the learned weight) of every chunk
    retrieved as a candidate."""

    chunk_ids: np.ndarray
    importance: np.ndarray
    retrieved: np.ndarray     # how many questions had the chunk among their candidates
    utility: float            # mean Ũ at the given (or learned) weights

    def order(self) -> np.ndarray:
        """Positions from least to most important (ties by chunk id)."""
        return np.lexsort((self.chunk_ids, self.importance))


def chunk_importance(candidate_ids: Sequence[Sequence[int]], utilities: Sequence[Sequence[float]], k: int,
                     method: str = "exact", weight: float = 0.5, samples: int = 1000, seed: int = 0,
                     learn_steps: int = 0, learning_rate: float = 1.0) -> ImportanceResult:
    """Aggregate per-question gradients into one importance per chunk (mean over questions;
    a question that did not retrieve a chunk contributes 0).

    With ``learn_steps`` > 0 the weights are learned as in the paper instead: projected gradient
    ascent on the mean ``Ũ`` from ``weight``, ``w ← clip(w + learning_rate · ∇, 0, 1)``, and the
    importance of a chunk is its learned weight (0 = prune, 1 = keep)."""
    if method not in METHODS:
        raise UserError(f"unknown importance method {method!r}; choose one of {', '.join(METHODS)}")
    if not candidate_ids:
        raise UserError("no validation questions")
    if learn_steps < 0:
        raise UserError(f"learn_steps must be >= 0 (got {learn_steps})")
    m = max(len(c) for c in candidate_ids)
    ids = np.full((len(candidate_ids), m), -1, dtype=np.int64)
    u = np.zeros((len(candidate_ids), m))
    for row, (cands, utils) in enumerate(zip(candidate_ids, utilities)):
        ids[row, :len(cands)] = cands
        u[row, :len(utils)] = utils
    valid = ids >= 0
    unique, inverse = np.unique(ids[valid], return_inverse=True)
    retrieved = np.bincount(inverse, minlength=len(unique))
    weights = np.full(len(unique), float(weight))

    def gradient(chunk_weights: np.ndarray, step_seed: int) -> tuple[float, np.ndarray]:
        w = np.zeros_like(u)                      # padding is never in the corpus
        w[valid] = chunk_weights[inverse]
        value, grad = multilinear_gradient(u, w, k)
        if method == "sampled":
            grad = sampled_gradient(u, w, k, samples, step_seed)
        per_chunk = np.bincount(inverse, weights=grad[valid], minlength=len(unique)) / len(candidate_ids)
        return float(value.mean()), per_chunk

    for step in range(learn_steps):
        _, grad = gradient(weights, seed + step)
        weights = np.clip(weights + learning_rate * grad, 0.0, 1.0)
    utility, grad = gradient(weights, seed)
    return ImportanceResult(unique, weights if learn_steps else grad, retrieved, utility)


def answer_utilities(texts: Sequence[Sequence[str]], answers: Sequence[Sequence[str]],
                     metric: Callable[[Sequence[str], Sequence[str]], float]) -> list[list[float]]:
    """Utility of each candidate alone: ``metric([text], answers)`` (the CLI passes
    ``evaluators.answers.answer_in_context``)."""
    return [[float(metric([t], golds)) for t in cands] for cands, golds in zip(texts, answers)]


def load_validation(path) -> tuple[list[str], list[list[str]]]:
    """Questions and gold answers from a questions JSONL (``question`` and ``answers`` per line;
    ``references`` are not needed); every question needs an answer."""
    from datastores.ops.decontaminate import read_qa_jsonl

    records = read_qa_jsonl(path)
    missing = [i for i, r in enumerate(records) if not r.answers]
    if missing:
        raise UserError(f"{path}: {len(missing)} question(s) have no answers (first: line {missing[0] + 1}); "
                         "data importance needs gold answers")
    return [r.question for r in records], [list(r.answers) for r in records]


def datastore_importance(ds, questions: Sequence[str], answers: Sequence[Sequence[str]],
                         metric: Callable[[Sequence[str], Sequence[str]], float], k: int = 5,
                         candidates: int = 50, mode: str = "dense", method: str = "exact", weight: float = 0.5,
                         samples: int = 1000, seed: int = 0, learn_steps: int = 0,
                         learning_rate: float = 1.0) -> ImportanceResult:
    """Importance of the live chunks that ``ds`` (a ``Datastore``) retrieves among the top
    ``candidates`` of each validation question; the utility of a chunk is ``metric([its text],
    answers)``, e.g. whether it contains a gold answer (``evaluators.answers.answer_in_context``).
    Chunks ranked below ``candidates`` are treated as never retrieved, which drops only terms whose
    probability of reaching the top-K decays like a binomial tail."""
    if candidates < k:
        raise UserError(f"--candidates ({candidates}) must be at least k ({k})")
    if not 0.0 < weight <= 1.0:
        raise UserError(f"weight must be in (0, 1] (got {weight})")
    hits = ds.search_many(list(questions), k=candidates, mode=mode)
    ids = [[h.chunk_id for h in found] for found in hits]
    utilities = answer_utilities([[h.text for h in found] for found in hits], answers, metric)
    return chunk_importance(ids, utilities, k, method, weight, samples, seed, learn_steps, learning_rate)


#: share of the questions held out by ``split_questions`` when no held-out file is given
HELDOUT_FRACTION = 0.3


def split_questions(count: int, fraction: float = HELDOUT_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``count`` question positions into (scoring, held out); both non-empty."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"the held-out fraction must be in (0, 1) (got {fraction})")
    if count < 2:
        raise UserError(f"{count} question(s) cannot be split to hold some out; give --heldout FILE")
    order = np.random.default_rng(seed).permutation(count)
    held = min(count - 1, max(1, round(fraction * count)))
    return np.sort(order[held:]), np.sort(order[:held])


@dataclass(frozen=True)
class HeldOutCheck:
    """Answer-in-top-``k`` on questions the importance was not computed on, with and without the
    chunks a pruning would drop."""

    questions: int
    k: int
    before: float
    after: float

    @property
    def lowers(self) -> bool:
        return self.after < self.before

    def as_dict(self) -> dict[str, float | int]:
        return {"questions": self.questions, "k": self.k, "before": self.before, "after": self.after}


def top_texts_without(ds, questions: Sequence[str], k: int, mode: str, drop: set[int],
                      depth: int) -> list[list[str]]:
    """Per question, the texts of its top ``k`` hits once the chunks in ``drop`` are gone (the
    ranking is searched ``depth`` deep, deeper for questions that lose too many hits)."""
    out: list[list[str]] = [[] for _ in questions]
    todo, live = list(range(len(questions))), len(ds)
    depth = max(1, min(depth, live))
    while todo:
        found = ds.search_many([questions[i] for i in todo], k=depth, mode=mode)
        retry = []
        for i, hits in zip(todo, found):
            out[i] = [h.text for h in hits if h.chunk_id not in drop][:k]
            if len(out[i]) < k and len(hits) == depth < live:
                retry.append(i)
        todo, depth = retry, min(live, depth * 2)
    return out


def held_out_check(ds, questions: Sequence[str], answers: Sequence[Sequence[str]], drop: Sequence[int], k: int,
                   mode: str, metric: Callable[[Sequence[str], Sequence[str]], float]) -> HeldOutCheck:
    """``HeldOutCheck`` of dropping ``drop``: ``metric(top-k texts, answers)`` averaged over the
    questions (``evaluators.answers.answer_in_context`` from the CLI)."""
    rates = []
    for removed in (set(), {int(i) for i in drop}):
        texts = top_texts_without(ds, questions, k, mode, removed, 4 * k + 16)
        rates.append(float(np.mean([metric(t, a) for t, a in zip(texts, answers)])) if questions else 0.0)
    return HeldOutCheck(len(questions), k, rates[0], rates[1])

