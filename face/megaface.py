"""MegaFace Challenge 1 evaluation: identification (Rank-1, CMC) against 10..1M
distractors, verification TAR at FAR=1e-6, insightface's cleaned lists, and the devkit's
feature files.

Protocol (the devkit's): for every FaceScrub identity, each of its images in turn joins
the distractor gallery and every *other* image of that identity is a probe against it. A
probe-gallery pair has rank ``1 + #{distractors d : s(probe, d) >= s(probe, gallery)}``;
CMC(r) is the fraction of pairs of rank <= r, Rank-1 is CMC(1).

Scores are dot products of the float32 features (of L2-normalised features they order
every gallery as the devkit's L2 distance does, ``|a - b|^2 = 2 - 2 a.b``), computed one
way for every pair, genuine or distractor (``pair_scores``): the products are exact in
float64 and are added in dimension order. Two bit-identical features therefore score
bit-identically against a probe, in any chunk and at any chunk size.

Ties: a distractor scoring *exactly* the genuine score counts as ranked ahead of the
genuine match (ties are misses, the pessimistic rule); a distractor identical to the
gallery image is such a tie.

Verification (the devkit's second number): genuine scores are the unordered same-identity
probe pairs, impostor scores every probe-distractor pair; M = floor(FAR x #impostors)
false accepts are allowed, counted exactly in integers with FAR taken as the decimal number
given (``1e-6`` is 1/1,000,000, not the binary float next to it); the threshold t is the
(M+1)-th largest impostor score, so at most M impostors score above it; TAR =
#{genuine > t} / #genuine.

Streaming: the distractors are scored in chunks of ``chunk_size`` against all probes with
one GEMM (float32 through numpy's BLAS, or float64 on a torch device such as a GPU,
``identify(device=...)``). Its rounding error is bounded (``(D + 2) 2^-23 |p| |x|`` covers any
summation order), so only scores within that bound of a decision (a probe's ``max_rank``
best distractors, the M+1 highest impostors) are recomputed with ``pair_scores``; per
probe the ``max_rank`` highest exact distractor scores are kept (that decides every rank up
to ``max_rank``), plus a global buffer of the M+1 highest exact impostor scores. Memory is
one ``probes x chunk`` score block; nothing grows with the number of distractors. The
result equals ``identify_brute_force`` (every score exact) bit for bit. Distractor set
sizes are prefixes of the distractor list (chunks are cut at the size boundaries, so every
size comes out of one pass).

Cleaned lists (insightface's ``facescrub_noises.txt`` / ``megaface_noises.txt``): a noisy
probe's feature is replaced by the normalised mean of its identity's clean features. A
noisy distractor stays in the list and is *removed* from scoring: it is never ranked ahead
of a genuine match and never a false accept, but it still counts towards the distractor
set size and the impostor pairs. That is what insightface's cleaned features give in the
devkit (``remove_noises.py`` rewrites every listed feature and gives a noisy distractor an
extra dimension of 100, out of reach of every probe): the set of size 1M is the devkit's
1M list, of which the clean entries are scored.

Feature files (the devkit's OpenCV "matio" binary): four int32 ``rows, cols, row stride in
bytes (cols * 4), OpenCV type (5 = CV_32F)``, then ``rows * cols`` float32; a feature is a
``(D, 1)`` column (insightface writes those) or a ``(1, D)`` row. One file per image at
``<feature root>/<image path relative to its set><file ending>``.

Origin: this project, after Kemelmacher-Shlizerman et al., CVPR 2016 (the devkit), and
insightface's MegaFace evaluation scripts. Licence: Apache-2.0.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from backbones.errors import InputError

__all__ = ['DEFAULT_SIZES', 'IdentificationResult', 'identify', 'identify_brute_force', 'pair_scores',
           'score_matrix', 'allowed_false_accepts', 'read_feature_file', 'write_feature_file', 'read_image_list',
           'read_noise_list', 'clean_probes', 'plot_cmc', 'pair_indices', 'file_sha256', 'feature_cache_dir',
           'extract_list_features', 'evaluate_megaface']

DEFAULT_SIZES = (10, 100, 1000, 10000, 100000, 1000000)
_CV_32F = 5
_MAT_HEADER = struct.Struct('<4i')
_CACHE_MANIFEST = 'features.json'


# -- feature files -------------------------------------------------------------------

def write_feature_file(path: str, feature: np.ndarray) -> None:
    """Write one feature vector as a devkit matio file: a 1-D feature as a ``(D, 1)``
    column (as insightface does), a ``(1, D)`` or ``(D, 1)`` array as it is. The third
    header field is the row stride, ``cols * 4`` bytes. The file is replaced atomically."""
    from backbones.io_utils import atomic_write_bytes
    feature = np.asarray(feature)
    if feature.ndim == 1:
        feature = feature[:, None]
    if feature.ndim != 2 or 1 not in feature.shape or feature.size < 1:
        raise InputError(f'a feature file holds one vector, got an array of shape {feature.shape}', path,
                         'a (D,), (D, 1) or (1, D) array')
    rows, cols = feature.shape
    data = np.ascontiguousarray(feature, dtype='<f4').tobytes()
    # one file per image, a million of them: renamed into place, not fsynced one by one
    atomic_write_bytes(path, _MAT_HEADER.pack(rows, cols, cols * 4, _CV_32F) + data, fsync=False)


def read_feature_file(path: str) -> np.ndarray:
    """Read a devkit matio feature file (a ``(D, 1)`` or ``(1, D)`` CV_32F matrix) into a
    flat float32 vector."""
    with open(path, 'rb') as f:
        head = f.read(_MAT_HEADER.size)
        if len(head) < _MAT_HEADER.size:
            raise InputError(f'{len(head)} bytes, shorter than the 16-byte matio header', path,
                             'a devkit feature file (int32 rows, cols, row stride, type; float32 data)')
        rows, cols, stride, cv_type = _MAT_HEADER.unpack(head)
        if cv_type != _CV_32F:
            raise InputError(f'matio type {cv_type}', path, f'CV_32F (type {_CV_32F}) features')
        if rows < 1 or cols < 1 or min(rows, cols) != 1:
            raise InputError(f'matio header gives a {rows}x{cols} matrix', path,
                             'one feature vector: a (D, 1) column or a (1, D) row')
        if stride != cols * 4:
            raise InputError(f'matio row stride {stride} bytes for {cols} float32 columns', path,
                             f'{cols * 4} (cols * 4, a dense CV_32F matrix)')
        data = f.read()
    if len(data) != rows * stride:
        raise InputError(f'the header announces {rows}x{cols} float32 ({rows * stride} bytes), the file holds '
                         f'{len(data)}', path, 'a complete feature file (rewrite it)')
    return np.frombuffer(data, dtype='<f4').astype(np.float32)


# -- lists -----------------------------------------------------------------------------

def read_image_list(path: str) -> Tuple[List[str], Optional[List[str]]]:
    """Image paths (and identities where the list has them) from the devkit's JSON lists
    (``{"path": [...], "id": [...]}``) or insightface's text lists (one path per line)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image list not found: {path}')
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith('{'):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f'invalid JSON list: {err}', path, 'a devkit JSON list or one path per line') from err
        if not isinstance(data, dict) or not isinstance(data.get('path'), list):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InputError(f'a JSON image list needs a "path" array, got {found}', path,
                             '{"path": [...], "id": [...]} (the devkit\'s lists)')
        ids = data.get('id')
        if ids is not None and len(ids) != len(data['path']):
            raise InputError(f'{len(ids)} ids for {len(data["path"])} paths', path, 'one "id" per "path"')
        return [str(p) for p in data['path']], ([str(i) for i in ids] if ids is not None else None)
    paths = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith('#')]
    return paths, None


def read_noise_list(path: str) -> set:
    """Entries of an insightface noise list (``#`` comments skipped; of tab-separated
    lines the last field, the image path)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'noise list not found: {path}')
    out = set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                out.add(line.split('\t')[-1])
    return out


def clean_probes(features: np.ndarray, labels: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Replace noisy probes' features by the normalised mean of their identity's clean ones."""
    features = np.array(features, dtype=np.float32, copy=True)
    labels, noisy = np.asarray(labels), np.asarray(noisy, bool)
    for ident in np.unique(labels[noisy]):
        members = labels == ident
        clean = members & ~noisy
        if not clean.any():
            raise InputError(f'identity {ident}: every probe image is on the noise list, no centre to use',
                             'facescrub noise list', 'at least one clean image per identity')
        centre = features[clean].sum(0)
        features[members & noisy] = centre / np.linalg.norm(centre)
    return features


# -- scores ----------------------------------------------------------------------------

def pair_scores(a: np.ndarray, b: np.ndarray, block: int = 8192) -> np.ndarray:
    """Scores of row-aligned pairs ``a[i] . b[i]`` as float64: the float32 features'
    products are exact in float64 and are added in dimension order, so the score of two
    vectors depends on their bits alone (not on which matrix, chunk or position they sit in).
    ``score_matrix`` does the same arithmetic for every pair of two sets."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f'pair_scores needs two (n, D) arrays of one shape, got {a.shape} and {b.shape}')
    out = np.empty(len(a), np.float64)
    for start in range(0, len(a), block):
        products = a[start:start + block].astype(np.float64) * b[start:start + block].astype(np.float64)
        # a cumulative sum adds strictly left to right: the dimension order score_matrix uses
        out[start:start + block] = np.cumsum(products, axis=1)[:, -1] if products.shape[1] else 0.0
    return out


def score_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All scores ``a[i] . b[j]`` as a float64 matrix, with ``pair_scores``' arithmetic
    (for the brute-force reference: memory ``len(a) x len(b)``)."""
    a64, b64 = np.asarray(a, np.float32).astype(np.float64), np.asarray(b, np.float32).astype(np.float64)
    acc = np.zeros((len(a64), len(b64)), np.float64)
    for k in range(a64.shape[1]):
        acc += np.multiply.outer(a64[:, k], b64[:, k])
    return acc


def _far_fraction(far: Union[float, str, Fraction]) -> Fraction:
    """FAR as an exact fraction: a float is read as the decimal it prints as (``1e-06``)."""
    if isinstance(far, bool) or not isinstance(far, (int, float, str, Fraction)):
        raise InputError(f'FAR {far!r} is not a number', 'far', 'a false accept rate in [0, 1]')
    if isinstance(far, float) and not math.isfinite(far):
        raise InputError(f'FAR {far!r} is not finite', 'far', 'a false accept rate in [0, 1]')
    try:
        fraction = Fraction(repr(far)) if isinstance(far, float) else Fraction(far)
    except (ValueError, ZeroDivisionError):
        raise InputError(f'FAR {far!r} is not a number', 'far', 'a false accept rate in [0, 1]')
    if not 0 <= fraction <= 1:
        raise InputError(f'FAR {far} lies outside [0, 1]', 'far', 'a false accept rate in [0, 1]')
    return fraction


def allowed_false_accepts(far: Union[float, str, Fraction], num_impostors: int) -> int:
    """``floor(FAR x num_impostors)``, exactly (integers, FAR as the decimal given).

    Example:
        >>> allowed_false_accepts(1e-6, 3530 * 1000000)  # float arithmetic gives 3529.9999999999995
        3530
    """
    fraction = _far_fraction(far)
    return (fraction.numerator * int(num_impostors)) // fraction.denominator


def _error_bound(probe_norms: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Per probe, a bound on |float32 GEMM score - pair_scores score| over the block: any
    summation order errs by at most gamma_D sum|p_i x_i| <= gamma_D |p| |x| (gamma_D ~ D 2^-24),
    float64 by far less; (D + 2) 2^-23 leaves a factor two, the last term covers underflow."""
    dim = block.shape[1]
    # the largest norm from float32 squares, inflated by their own rounding bound
    x_max = float(np.sqrt(np.max(np.einsum('ij,ij->i', block, block)))) * (1 + (dim + 2) * 2.0 ** -23)
    return (dim + 2) * 2.0 ** -23 * probe_norms * x_max * (1 + 1e-6) + dim * 2.0 ** -140


# -- identification ------------------------------------------------------------------------

@dataclass
class IdentificationResult:
    """Per distractor-set size: ``cmc[size]`` (CMC at ranks 1..max_rank, fractions);
    ``rank1[size]`` (%); ``scored[size]`` (distractors scored: the size less the removed
    ones); TAR at FAR for the largest size with ``allowed_false_accepts`` (M) and the
    ``threshold``; counts."""

    cmc: Dict[int, np.ndarray] = field(default_factory=dict)
    scored: Dict[int, int] = field(default_factory=dict)
    num_pairs: int = 0
    max_rank: int = 1
    far: float = 1e-6
    tar: Optional[float] = None
    threshold: Optional[float] = None
    allowed_false_accepts: Optional[int] = None
    num_genuine: int = 0
    num_impostor: int = 0

    @property
    def rank1(self) -> Dict[int, float]:
        return {size: 100.0 * float(c[0]) for size, c in self.cmc.items()}

    def to_dict(self) -> dict:
        return dict(rank1=self.rank1, cmc={k: v.tolist() for k, v in self.cmc.items()}, scored=self.scored,
                    num_pairs=self.num_pairs, max_rank=self.max_rank, far=self.far, tar=self.tar,
                    threshold=self.threshold, allowed_false_accepts=self.allowed_false_accepts,
                    num_genuine=self.num_genuine, num_impostor=self.num_impostor)


def pair_indices(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All ordered (probe, gallery) index pairs of one identity, probe != gallery."""
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    probe, gallery = np.nonzero(same)
    return probe, gallery


def _check_inputs(probes, labels, distractors, sizes, removed, far):
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    distractors = np.asarray(distractors, dtype=np.float32)
    labels = np.asarray(labels)
    if probes.ndim != 2 or distractors.ndim != 2 or probes.shape[1] != distractors.shape[1]:
        raise ValueError(f'probes (P, D) and distractors (N, D) must share D, got {probes.shape} and '
                         f'{distractors.shape}')
    if labels.shape != (probes.shape[0],):
        raise ValueError(f'need one label per probe: {labels.shape} labels for {probes.shape[0]} probes')
    for name, feats in (('probe', probes), ('distractor', distractors)):
        finite = np.isfinite(feats).all(1)
        if not finite.all():
            raise InputError(f'{name} feature {int(np.argmin(finite))} is not finite', f'{name}s',
                             'finite features (a broken image or feature file?)')
    sizes = tuple(sorted({int(s) for s in (sizes or (distractors.shape[0],))}))
    if sizes[0] < 1 or sizes[-1] > distractors.shape[0]:
        raise ValueError(f'distractor set sizes {sizes} must lie in [1, {distractors.shape[0]}]')
    removed = np.zeros(len(distractors), bool) if removed is None else np.asarray(removed, bool)
    if removed.shape != (len(distractors),):
        raise ValueError(f'removed must flag each of the {len(distractors)} distractors, got shape {removed.shape}')
    if far is not None:
        _far_fraction(far)
    return probes, labels, distractors, sizes, removed


def _ranks_to_cmc(ahead: np.ndarray, max_rank: int) -> np.ndarray:
    rank = 1 + ahead  # distractors scoring >= the genuine score are ahead of it (ties: misses)
    r = np.arange(1, max_rank + 1)
    return (rank[:, None] <= r[None, :]).mean(0)


def _candidates(scores: Union[np.ndarray, torch.Tensor], top_values: np.ndarray, top_index: np.ndarray,
                threshold: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(row, column) of every finite score >= its row's threshold, from each row's top
    values where they hold them all (a row is read whole only where its every top value passes;
    ``scores`` may sit on a torch device, then only those rows are copied back)."""
    passing = (top_values >= threshold[:, None]) & np.isfinite(top_values)
    rows, pos = np.nonzero(passing)
    cols = top_index[rows, pos]
    if top_values.shape[1] < scores.shape[1]:
        full = np.nonzero(top_values.min(1) >= threshold)[0]
        if full.size:
            keep = ~np.isin(rows, full)
            if isinstance(scores, torch.Tensor):
                part = scores[torch.from_numpy(full).to(scores.device)].cpu().numpy()
            else:
                part = scores[full]
            r, c = np.nonzero((part >= threshold[full, None]) & np.isfinite(part))
            rows, cols = np.concatenate([rows[keep], full[r]]), np.concatenate([cols[keep], c])
    return rows, cols


def _merge_rows(top: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's k largest of its current ``top`` (P, k) values and its new ``values``."""
    if not rows.size:
        return top
    num_rows, k = top.shape
    all_rows = np.concatenate([np.repeat(np.arange(num_rows), k), rows])
    all_values = np.concatenate([top.ravel(), values])
    order = np.lexsort((-all_values, all_rows))  # by row, then value descending
    all_rows, all_values = all_rows[order], all_values[order]
    first = np.searchsorted(all_rows, np.arange(num_rows))
    within = np.arange(all_rows.size) - first[all_rows]
    return all_values[within < k].reshape(num_rows, k)


def _largest(values: np.ndarray, n: int) -> np.ndarray:
    return values if values.size <= n else np.partition(values, values.size - n)[values.size - n:]


def _kth_largest(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, values.size - k)[values.size - k]) if values.size >= k else -np.inf


def identify(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray, sizes: Optional[Sequence[int]] = None,
             max_rank: int = 10, far: Optional[Union[float, str, Fraction]] = 1e-6, chunk_size: int = 16384,
             progress: bool = False, removed: Optional[np.ndarray] = None,
             device: Optional[Union[str, torch.device]] = None) -> IdentificationResult:
    """Streaming MegaFace identification (module docstring).

    Args:
        probes: ``(P, D)`` float features (normalised for cosine scores).
        labels: ``(P,)`` identities of the probes.
        distractors: ``(N, D)`` float features; size s uses the first s rows.
        sizes: distractor set sizes (default: all N).
        max_rank: CMC computed for ranks 1..max_rank.
        far: false accept rate for TAR (on the largest size), read as the decimal it
            prints as; None skips it.
        chunk_size: distractors scored per GEMM (the result does not depend on it).
        removed: ``(N,)`` bool, distractors removed by a cleaned list: never ranked ahead,
            never accepted, still counted in the sizes and the impostor pairs.
        device: where each chunk's GEMM and top-k run. None: numpy's float32 BLAS on this
            CPU. A torch device (``'cuda'``; any device works): a float64 GEMM there, which
            float32 features multiply into exactly, so no TF32 or other reduced-precision
            float32 setting can enter; chunks are copied there one at a time. Either way the
            exact rescoring runs here, and the result is the same, bit for bit.
    """
    from tqdm import tqdm
    probes, labels, distractors, sizes, removed = _check_inputs(probes, labels, distractors, sizes, removed, far)
    if max_rank < 1 or chunk_size < 1:
        raise ValueError(f'max_rank and chunk_size must be >= 1, got {max_rank} and {chunk_size}')
    num_probes = probes.shape[0]
    probe_idx, gallery_idx = pair_indices(labels)
    if not len(probe_idx):
        raise ValueError('no identity has two probe images: there are no probe-gallery pairs')
    genuine = pair_scores(probes[probe_idx], probes[gallery_idx])
    result = IdentificationResult(num_pairs=len(probe_idx), max_rank=max_rank, far=float(far or 0.0))

    largest = sizes[-1]
    keep = min(max_rank, largest)
    top = np.full((num_probes, keep), -np.inf)  # per probe the `keep` highest exact distractor scores
    impostor_top = np.empty(0)
    n_keep_impostor = None if far is None else allowed_false_accepts(far, num_probes * largest) + 1
    # per-row candidates for the impostor buffer: enough that P rows together hold n_keep,
    # and a few more so that near-ties rarely make a whole row be read
    per_row = keep if n_keep_impostor is None else max(keep, -(-n_keep_impostor // num_probes))
    per_row += 4
    probe_norms = np.linalg.norm(probes.astype(np.float64), axis=1)
    bounds = sorted(set(range(0, largest, chunk_size)) | set(sizes) | {0})
    pending = list(sizes)
    device = None if device is None else torch.device(device)
    with torch.inference_mode():
        probes_on_device = None if device is None else torch.from_numpy(probes).to(device, torch.float64)
        bar = tqdm(total=largest, desc='distractors', unit='img', disable=not progress, unit_scale=True)
        for start, end in zip(bounds[:-1], bounds[1:]):
            block = distractors[start:end]
            gone = removed[start:end]
            kk = min(per_row, end - start)
            if device is None:
                scores = probes @ block.T  # float32 GEMM through numpy's BLAS
                if gone.any():
                    scores[:, gone] = -np.inf
                values, index = torch.from_numpy(scores).topk(kk, dim=1, sorted=False)
                values, index = values.numpy(), index.numpy()
            else:
                block_on_device = torch.from_numpy(np.ascontiguousarray(block)).to(device, torch.float64)
                scores = probes_on_device @ block_on_device.T
                if gone.any():
                    scores[:, torch.from_numpy(gone).to(device)] = -math.inf
                values, index = scores.topk(kk, dim=1, sorted=False)
                values, index = values.cpu().numpy(), index.cpu().numpy()
            tol = _error_bound(probe_norms, block)
            # an exact score can enter a probe's top only above max(its current k-th, this
            # block's k-th GEMM score - tol); a GEMM score can only be it within tol of that
            kth = np.partition(values, kk - keep, axis=1)[:, kk - keep] if kk >= keep else np.full(num_probes, -np.inf)
            lower = np.maximum(top.min(1), kth - tol)
            threshold = lower - tol
            if n_keep_impostor is not None:
                bounds_below = (values - tol[:, None])[np.isfinite(values)]
                lower_impostor = _kth_largest(np.concatenate([impostor_top, bounds_below]), n_keep_impostor)
                threshold = np.minimum(threshold, lower_impostor - tol)
            rows, cols = _candidates(scores, values, index, threshold)
            exact = pair_scores(probes[rows], block[cols])
            top = _merge_rows(top, rows, exact)
            if n_keep_impostor is not None:
                impostor_top = _largest(np.concatenate([impostor_top, exact]), n_keep_impostor)
            bar.update(end - start)
            while pending and pending[0] == end:
                # top holds every distractor score while fewer than max_rank were seen, so
                # small sets rank exactly too
                size = pending.pop(0)
                ahead = (top[probe_idx] >= genuine[:, None]).sum(1)
                result.cmc[size] = _ranks_to_cmc(ahead, max_rank)
                result.scored[size] = int(size - removed[:size].sum())
        bar.close()
    if n_keep_impostor is not None:
        threshold = float(impostor_top.min()) if impostor_top.size >= n_keep_impostor else -np.inf
        _set_tar(result, probes, labels, threshold, n_keep_impostor - 1, num_probes * largest)
    return result


def _set_tar(result, probes, labels, threshold, allowed, n_impostor):
    iu, ju = np.triu_indices(len(labels), k=1)
    same = labels[iu] == labels[ju]
    genuine = pair_scores(probes[iu[same]], probes[ju[same]])
    result.num_genuine, result.num_impostor = int(genuine.size), int(n_impostor)
    result.allowed_false_accepts = int(allowed)
    result.threshold = float(threshold)  # -inf: fewer impostors than FAR allows above it, all accepted
    result.tar = 100.0 * float((genuine > threshold).mean()) if genuine.size else None


def identify_brute_force(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray,
                         sizes: Optional[Sequence[int]] = None, max_rank: int = 10,
                         far: Optional[Union[float, str, Fraction]] = 1e-6,
                         removed: Optional[np.ndarray] = None) -> IdentificationResult:
    """Reference: every score exact (``score_matrix``), every pair ranked by counting (small inputs)."""
    probes, labels, distractors, sizes, removed = _check_inputs(probes, labels, distractors, sizes, removed, far)
    scores = score_matrix(probes, distractors)
    scores[:, removed] = -np.inf
    genuine_matrix = score_matrix(probes, probes)
    result = IdentificationResult(max_rank=max_rank, far=float(far or 0.0))
    pairs = [(p, g) for p in range(len(labels)) for g in range(len(labels)) if p != g and labels[p] == labels[g]]
    result.num_pairs = len(pairs)
    for size in sizes:
        ranks = np.array([1 + int((scores[p, :size] >= genuine_matrix[p, g]).sum()) for p, g in pairs])
        result.cmc[size] = np.array([(ranks <= r).mean() for r in range(1, max_rank + 1)])
        result.scored[size] = int(size - removed[:size].sum())
    if far is not None:
        impostors = np.sort(scores[:, :sizes[-1]].ravel())[::-1]
        m = allowed_false_accepts(far, impostors.size)
        threshold = impostors[m] if m < impostors.size else -np.inf
        gen = [genuine_matrix[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))
               if labels[i] == labels[j]]
        result.threshold = float(threshold)
        result.allowed_false_accepts = m
        result.tar = 100.0 * float(np.mean(np.array(gen) > threshold)) if gen else None
        result.num_genuine, result.num_impostor = len(gen), impostors.size
    return result


def plot_cmc(result: IdentificationResult, path: str, title: str = 'MegaFace identification') -> None:
    """CMC curves, one per distractor set size, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from backbones.io_utils import atomic_write
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ranks = np.arange(1, result.max_rank + 1)
    for size, cmc in sorted(result.cmc.items()):
        ax.plot(ranks, 100 * cmc, marker='o', markersize=3, label=f'{size:,} distractors')
    ax.set_xlabel('rank')
    ax.set_ylabel('identification rate (%)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120))
    plt.close(fig)


# -- the whole evaluation ----------------------------------------------------------------

def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def feature_cache_dir(feature_dir: str, set_name: str, checkpoint_sha256: str, list_path: str,
                      file_ending: str = '_toponet.bin', precision: str = 'float32') -> Tuple[str, dict]:
    """The folder of one set's cached features, keyed by the checkpoint's content and the
    image list's content: ``<feature_dir>/<set_name>_<key>`` with ``key`` the first 16 hex
    digits of SHA-256 over both hashes and the file ending (and the autocast ``precision``
    of mixed-precision features, which differ from float32 ones). Returns it and its manifest."""
    list_sha256 = file_sha256(list_path)
    keyed = f'{checkpoint_sha256}\n{list_sha256}\n{file_ending}' + (f'\n{precision}' if precision != 'float32' else '')
    key = hashlib.sha256(keyed.encode()).hexdigest()[:16]
    manifest = dict(set=set_name, key=key, checkpoint_sha256=checkpoint_sha256, list=os.path.abspath(list_path),
                    list_sha256=list_sha256, file_ending=file_ending, precision=precision)
    return os.path.join(feature_dir, f'{set_name}_{key}'), manifest


def _claim_cache(feature_dir: str, manifest: dict) -> None:
    """Write the folder's manifest, or check that the folder's features are ``manifest``'s."""
    from backbones.io_utils import atomic_write_text
    path = os.path.join(feature_dir, _CACHE_MANIFEST)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                found = json.load(f)
        except (OSError, ValueError):
            found = None
        if not isinstance(found, dict) or found.get('key') != manifest['key']:
            got = found.get('key') if isinstance(found, dict) else 'unreadable'
            raise InputError(f'the feature folder holds features of another checkpoint or list (key {got})',
                             feature_dir, f'a folder of key {manifest["key"]} (pass another --feature-dir)')
        return
    atomic_write_text(path, json.dumps(manifest, indent=1))


def extract_list_features(model: torch.nn.Module, root: str, paths: Sequence[str], batch_size: int = 64,
                          flip: bool = True, feature_dir: Optional[str] = None, file_ending: str = '_toponet.bin',
                          reuse: bool = True, desc: str = 'features', progress: bool = True,
                          cache_manifest: Optional[dict] = None, skip: Optional[Sequence[bool]] = None,
                          amp: bool = False) -> np.ndarray:
    """L2-normalised (flip-fused) features of the listed images: each aligned from its
    landmark JSON with ``norm_crop``, resized to the network's input. With
    ``feature_dir`` every feature is also written as a devkit file
    ``<feature_dir>/<path><file_ending>``, and existing files are read instead of
    recomputed when ``reuse`` is set (an interrupted extraction resumes). With
    ``cache_manifest`` (``feature_cache_dir``) the folder is claimed for that checkpoint and
    list: features of any other are never read. ``skip`` flags images not to extract (their
    rows are zeros). The model runs on its own device, under autocast with ``amp``
    (``backbones.amp``)."""
    import cv2
    from tqdm import tqdm
    from .align import load_aligned
    from .verification import extract_features
    if not len(paths):
        raise InputError('the image list is empty', root, 'at least one image')
    if feature_dir and cache_manifest is not None:
        _claim_cache(feature_dir, cache_manifest)
    size = int(getattr(model, 'input_size', 112))
    features: List[Optional[np.ndarray]] = [None] * len(paths)
    todo = []
    for i, rel in enumerate(paths):
        if skip is not None and skip[i]:
            continue
        fpath = os.path.join(feature_dir, rel + file_ending) if feature_dir else None
        if fpath and reuse and os.path.isfile(fpath):
            features[i] = read_feature_file(fpath)
        else:
            todo.append(i)
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not progress):
        batch = todo[start:start + batch_size]
        crops = []
        for i in batch:
            crop = load_aligned(os.path.join(root, paths[i]), image_size=112)
            if size != 112:
                crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
            crops.append(crop)
        feats = extract_features(model, np.stack(crops), batch_size=len(crops), flip=flip, amp=amp)
        for i, feat in zip(batch, feats):
            features[i] = feat
            if feature_dir:
                write_feature_file(os.path.join(feature_dir, paths[i] + file_ending), feat)
    present = [f for f in features if f is not None]
    dims = {f.shape for f in present}
    if len(dims) > 1:
        raise InputError(f'features of different sizes {sorted(dims)}', feature_dir or root,
                         'one feature size (stale files from another model?)')
    dim = present[0].shape if present else (0,)
    return np.stack([f if f is not None else np.zeros(dim, np.float32) for f in features]).astype(np.float32)


def evaluate_megaface(model: torch.nn.Module, facescrub_root: str, facescrub_list: str, megaface_root: str,
                      megaface_list: str, facescrub_noises: Optional[str] = None,
                      megaface_noises: Optional[str] = None, sizes: Sequence[int] = DEFAULT_SIZES,
                      max_rank: int = 10, far: Union[float, str, Fraction] = 1e-6, feature_dir: Optional[str] = None,
                      file_ending: str = '_toponet.bin', batch_size: int = 64, progress: bool = True,
                      checkpoint: Optional[str] = None, amp: bool = False) -> Tuple[IdentificationResult, dict]:
    """Features for the probe and distractor lists, insightface's cleaning when the
    noise lists are given, then ``identify`` over the distractor set sizes the list holds
    (the largest the list's length when none does).

    Sizes count list entries: noisy distractors are removed from scoring but not from the
    count (module docstring), and ``result.scored`` gives the distractors scored per size.
    With ``feature_dir`` the features are cached in one folder per set, keyed by the
    ``checkpoint`` file's content and the list's (``feature_cache_dir``): ``checkpoint`` is
    then required, and features of another checkpoint or list are never reused.

    Features are extracted on the model's device (under autocast with ``amp``); on a CUDA
    device the identification's GEMMs run there too (``identify(device=...)``).
    """
    probe_paths, probe_ids = read_image_list(facescrub_list)
    distractor_paths, _ = read_image_list(megaface_list)
    if probe_ids is None:  # insightface's text lists: the identity is the image's folder
        probe_ids = [os.path.basename(os.path.dirname(p)) for p in probe_paths]
    info = dict(num_probes=len(probe_paths), num_identities=len(set(probe_ids)))
    caches = {}
    model_device = next(model.parameters()).device
    if feature_dir:
        if checkpoint is None:
            raise InputError('a feature cache needs the checkpoint it was computed with', 'feature_dir',
                             'the checkpoint file (its content hash keys the cache)')
        checkpoint_sha256 = file_sha256(checkpoint)
        from backbones.amp import amp_dtype
        precision = str(amp_dtype(model_device)).split('.')[-1] if amp else 'float32'
        for name, list_path in (('facescrub', facescrub_list), ('megaface', megaface_list)):
            caches[name] = feature_cache_dir(feature_dir, name, checkpoint_sha256, list_path, file_ending, precision)
        info['feature_dirs'] = {name: folder for name, (folder, _) in caches.items()}
    folder = lambda name: caches[name][0] if name in caches else None  # noqa: E731
    manifest = lambda name: caches[name][1] if name in caches else None  # noqa: E731
    probes = extract_list_features(model, facescrub_root, probe_paths, batch_size, True, folder('facescrub'),
                                   file_ending, desc='probes', progress=progress, cache_manifest=manifest('facescrub'),
                                   amp=amp)
    removed = np.zeros(len(distractor_paths), bool)
    if megaface_noises:
        noisy = read_noise_list(megaface_noises)
        removed = np.array([p in noisy for p in distractor_paths], bool)
        info['removed_distractors'] = int(removed.sum())
        if removed.all():
            raise InputError('every distractor is on the noise list', megaface_noises,
                             f'a noise list that leaves some of the {len(removed)} distractors of {megaface_list}')
    distractors = extract_list_features(model, megaface_root, distractor_paths, batch_size, True, folder('megaface'),
                                        file_ending, desc='distractors', progress=progress,
                                        cache_manifest=manifest('megaface'), skip=removed, amp=amp)
    labels = np.unique(np.asarray(probe_ids), return_inverse=True)[1]
    if facescrub_noises:
        noisy_names = read_noise_list(facescrub_noises)
        noisy = np.array([os.path.basename(p) in noisy_names for p in probe_paths])
        info['replaced_probes'] = int(noisy.sum())
        probes = clean_probes(probes, labels, noisy)
    info['num_distractors'] = len(distractor_paths)
    usable = [s for s in sizes if s <= len(distractor_paths)] or [len(distractor_paths)]
    result = identify(probes, labels, distractors, sizes=usable, max_rank=max_rank, far=far, progress=progress,
                      removed=removed, device=model_device if model_device.type == 'cuda' else None)
    return result, info
