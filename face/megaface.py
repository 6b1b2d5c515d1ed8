"""MegaFace Challenge 1 evaluation: identification (Rank-1, CMC) against 10..1M
distractors, verification TAR at FAR=1e-6, insightface's cleaned lists, and the devkit's
feature files.

Protocol (the devkit's): for every FaceScrub identity, each of its images in turn joins
the distractor gallery and every *other* image of that identity is a probe against it. A
probe-gallery pair has rank ``1 + #{distractors d : s(probe, d) >= s(probe, gallery)}``;
CMC(r) is the fraction of pairs of rank <= r, Rank-1 is CMC(1).

Ties: a distractor scoring *exactly* the genuine score counts as ranked ahead of the
genuine match (ties are misses, the pessimistic rule). Scores are dot products of
L2-normalised features, which order every gallery exactly as the devkit's L2 distance
does (``|a - b|^2 = 2 - 2 a.b``).

Verification (the devkit's second number): genuine scores are the unordered same-identity
probe pairs, impostor scores every probe-distractor pair; the threshold t is the
(M+1)-th largest impostor score, M = floor(FAR * #impostors), so that at most M impostors
score above it; TAR = #{genuine > t} / #genuine.

Streaming: the distractors are scored in chunks of ``chunk_size`` against all probes with
one float32 matmul; per probe only the ``max_rank`` highest distractor scores are kept
(that decides every rank up to ``max_rank``), plus a global buffer of the M+1 highest
impostor scores. Memory is one ``probes x chunk`` score block; nothing grows with the
number of distractors. Distractor set sizes are prefixes of the distractor list (chunks
are cut at the size boundaries, so every size comes out of one pass).

Cleaned lists (insightface's ``facescrub_noises.txt`` / ``megaface_noises.txt``): a noisy
probe's feature is replaced by the normalised mean of its identity's clean features; a
noisy distractor is removed (insightface pushes it out of reach with a large extra
feature dimension, which is the same as removing it).

Feature files (the devkit's OpenCV "matio" binary): four int32 ``rows, cols, element
size (4), OpenCV type (5 = CV_32F)``, then ``rows * cols`` float32, one file per image at
``<feature root>/<image path relative to its set><file ending>``.

Origin: this project, after Kemelmacher-Shlizerman et al., CVPR 2016 (the devkit), and
insightface's MegaFace evaluation scripts. Licence: Apache-2.0.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ['DEFAULT_SIZES', 'IdentificationResult', 'identify', 'identify_brute_force', 'read_feature_file',
           'write_feature_file', 'read_image_list', 'read_noise_list', 'clean_probes', 'plot_cmc', 'pair_indices',
           'extract_list_features', 'evaluate_megaface']

DEFAULT_SIZES = (10, 100, 1000, 10000, 100000, 1000000)
_CV_32F = 5
_MAT_HEADER = struct.Struct('<4i')


# -- feature files -------------------------------------------------------------------

def write_feature_file(path: str, feature: np.ndarray) -> None:
    """Write one feature vector as a devkit matio file (a column: rows=D, cols=1)."""
    feature = np.ascontiguousarray(feature, dtype='<f4').ravel()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(_MAT_HEADER.pack(feature.size, 1, 4, _CV_32F))
        f.write(feature.tobytes())


def read_feature_file(path: str) -> np.ndarray:
    """Read a devkit matio feature file into a flat float32 vector."""
    with open(path, 'rb') as f:
        head = f.read(_MAT_HEADER.size)
        if len(head) < _MAT_HEADER.size:
            raise ValueError(f'{path}: {len(head)} bytes, shorter than the 16-byte matio header')
        rows, cols, elem_size, cv_type = _MAT_HEADER.unpack(head)
        if cv_type != _CV_32F or elem_size != 4:
            raise ValueError(f'{path}: matio type {cv_type} with {elem_size}-byte elements; expected CV_32F '
                             f'(type 5, 4 bytes)')
        if rows < 1 or cols < 1:
            raise ValueError(f'{path}: matio header gives a {rows}x{cols} matrix')
        data = f.read()
    if len(data) != rows * cols * 4:
        raise ValueError(f'{path}: the header announces {rows}x{cols} float32 ({rows * cols * 4} bytes), the file '
                         f'holds {len(data)}')
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
            raise ValueError(f'{path}: invalid JSON list: {err}') from err
        if 'path' not in data or not isinstance(data['path'], list):
            raise ValueError(f'{path}: a JSON image list needs a "path" array, got keys {sorted(data)}')
        ids = data.get('id')
        if ids is not None and len(ids) != len(data['path']):
            raise ValueError(f'{path}: {len(ids)} ids for {len(data["path"])} paths')
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
            raise ValueError(f'identity {ident}: every probe image is on the noise list, no centre to use')
        centre = features[clean].sum(0)
        features[members & noisy] = centre / np.linalg.norm(centre)
    return features


# -- identification ------------------------------------------------------------------------

@dataclass
class IdentificationResult:
    """Per distractor-set size: ``cmc[size]`` (CMC at ranks 1..max_rank, fractions);
    ``rank1[size]`` (%); TAR at FAR for the largest size; counts."""

    cmc: Dict[int, np.ndarray] = field(default_factory=dict)
    num_pairs: int = 0
    max_rank: int = 1
    far: float = 1e-6
    tar: Optional[float] = None
    threshold: Optional[float] = None
    num_genuine: int = 0
    num_impostor: int = 0

    @property
    def rank1(self) -> Dict[int, float]:
        return {size: 100.0 * float(c[0]) for size, c in self.cmc.items()}

    def to_dict(self) -> dict:
        return dict(rank1=self.rank1, cmc={k: v.tolist() for k, v in self.cmc.items()}, num_pairs=self.num_pairs,
                    max_rank=self.max_rank, far=self.far, tar=self.tar, threshold=self.threshold,
                    num_genuine=self.num_genuine, num_impostor=self.num_impostor)


def pair_indices(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All ordered (probe, gallery) index pairs of one identity, probe != gallery."""
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    probe, gallery = np.nonzero(same)
    return probe, gallery


def _check_inputs(probes, labels, distractors, sizes):
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    distractors = np.asarray(distractors, dtype=np.float32)
    labels = np.asarray(labels)
    if probes.ndim != 2 or distractors.ndim != 2 or probes.shape[1] != distractors.shape[1]:
        raise ValueError(f'probes (P, D) and distractors (N, D) must share D, got {probes.shape} and '
                         f'{distractors.shape}')
    if labels.shape != (probes.shape[0],):
        raise ValueError(f'need one label per probe: {labels.shape} labels for {probes.shape[0]} probes')
    sizes = tuple(sorted({int(s) for s in (sizes or (distractors.shape[0],))}))
    if sizes[0] < 1 or sizes[-1] > distractors.shape[0]:
        raise ValueError(f'distractor set sizes {sizes} must lie in [1, {distractors.shape[0]}]')
    return probes, labels, distractors, sizes


def _ranks_to_cmc(ahead: torch.Tensor, max_rank: int) -> np.ndarray:
    rank = 1 + ahead  # distractors scoring >= the genuine score are ahead of it (ties: misses)
    r = torch.arange(1, max_rank + 1)
    return (rank[:, None] <= r[None, :]).double().mean(0).numpy()


def identify(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray, sizes: Optional[Sequence[int]] = None,
             max_rank: int = 10, far: Optional[float] = 1e-6, chunk_size: int = 16384,
             progress: bool = False) -> IdentificationResult:
    """Streaming MegaFace identification (module docstring).

    Args:
        probes: ``(P, D)`` float features (normalised for cosine scores).
        labels: ``(P,)`` identities of the probes.
        distractors: ``(N, D)`` float features; size s uses the first s rows.
        sizes: distractor set sizes (default: all N).
        max_rank: CMC computed for ranks 1..max_rank.
        far: false accept rate for TAR (on the largest size); None skips it.
        chunk_size: distractors scored per matmul.
    """
    from tqdm import tqdm
    probes, labels, distractors, sizes = _check_inputs(probes, labels, distractors, sizes)
    if max_rank < 1 or chunk_size < 1:
        raise ValueError(f'max_rank and chunk_size must be >= 1, got {max_rank} and {chunk_size}')
    num_probes = probes.shape[0]
    probe_idx, gallery_idx = pair_indices(labels)
    if not len(probe_idx):
        raise ValueError('no identity has two probe images: there are no probe-gallery pairs')
    probe_t, gallery_t = torch.from_numpy(probe_idx), torch.from_numpy(gallery_idx)
    genuine_matrix = torch.from_numpy(probes @ probes.T)
    genuine = genuine_matrix[probe_t, gallery_t]
    result = IdentificationResult(num_pairs=len(probe_idx), max_rank=max_rank, far=far or 0.0)

    largest = sizes[-1]
    keep = min(max_rank, largest)
    top = torch.empty(num_probes, 0)
    impostor_top = torch.empty(0)
    n_keep_impostor = None if far is None else int(np.floor(far * num_probes * largest)) + 1
    # per-row candidates for the impostor buffer: enough that P rows together hold n_keep
    per_row = keep if n_keep_impostor is None else max(keep, -(-n_keep_impostor // num_probes))
    bounds = sorted(set(range(0, largest, chunk_size)) | set(sizes) | {0})
    pending = list(sizes)
    with torch.inference_mode():
        bar = tqdm(total=largest, desc='distractors', unit='img', disable=not progress, unit_scale=True)
        for start, end in zip(bounds[:-1], bounds[1:]):
            # float32 GEMM through numpy's BLAS; torch views the result without a copy
            scores = torch.from_numpy(probes @ distractors[start:end].T)
            kk = min(per_row, scores.shape[1])
            row_top = scores.topk(kk, dim=1, sorted=False).values
            merged = torch.cat([top, row_top], 1)
            top = merged.topk(keep, dim=1, sorted=False).values if merged.shape[1] > keep else merged
            if n_keep_impostor is not None:
                impostor_top = _merge_impostors(impostor_top, scores, row_top, n_keep_impostor)
            bar.update(end - start)
            while pending and pending[0] == end:
                # top holds every distractor score while fewer than max_rank were seen, so
                # small sets rank exactly too
                ahead = (top[probe_t] >= genuine[:, None]).sum(1)
                result.cmc[pending.pop(0)] = _ranks_to_cmc(ahead, max_rank)
        bar.close()
    if n_keep_impostor is not None:
        _set_tar(result, genuine_matrix, labels, impostor_top, n_keep_impostor, num_probes * largest)
    return result


def _merge_impostors(buffer: torch.Tensor, scores: torch.Tensor, row_top: torch.Tensor, n_keep: int) -> torch.Tensor:
    """The n_keep highest values of ``buffer`` and ``scores`` together, from each row's
    top values ``row_top`` (a full row is read only where its top values all pass)."""
    pool = torch.cat([buffer, row_top.flatten()])
    if pool.numel() < n_keep:
        candidates = scores.flatten()
    else:
        # a lower bound of the true n_keep-th largest: every value that can make the cut
        # is >= it, and outside a row's top values only rows whose smallest kept value
        # passes can hold more
        lower = pool.topk(n_keep).values.min()
        full_rows = torch.nonzero(row_top.min(1).values >= lower).flatten()
        keep_rows = torch.ones(row_top.shape[0], dtype=torch.bool)
        keep_rows[full_rows] = False
        part = row_top[keep_rows]
        candidates = torch.cat([part[part >= lower]] + [scores[r][scores[r] >= lower] for r in full_rows.tolist()])
    merged = torch.cat([buffer, candidates])
    return merged.topk(min(n_keep, merged.numel())).values


def _set_tar(result, genuine_matrix, labels, impostor_top, n_keep, n_impostor):
    iu, ju = np.triu_indices(len(labels), k=1)
    same = labels[iu] == labels[ju]
    genuine = genuine_matrix[torch.from_numpy(iu[same]), torch.from_numpy(ju[same])]
    result.num_genuine, result.num_impostor = int(genuine.numel()), int(n_impostor)
    if impostor_top.numel() < n_keep:  # fewer impostors than FAR allows above the threshold: accept all
        threshold = float('-inf')
    else:
        threshold = float(impostor_top.min())
    result.threshold = threshold
    result.tar = 100.0 * float((genuine > threshold).double().mean()) if genuine.numel() else None


def identify_brute_force(probes: np.ndarray, labels: np.ndarray, distractors: np.ndarray,
                         sizes: Optional[Sequence[int]] = None, max_rank: int = 10,
                         far: Optional[float] = 1e-6) -> IdentificationResult:
    """Reference: the full score matrix, every pair ranked by counting (small inputs)."""
    probes = np.asarray(probes, np.float32)
    distractors = np.asarray(distractors, np.float32)
    labels = np.asarray(labels)
    sizes = tuple(sorted({int(s) for s in (sizes or (len(distractors),))}))
    scores = probes.astype(np.float64) @ distractors.astype(np.float64).T
    genuine_matrix = probes.astype(np.float64) @ probes.astype(np.float64).T
    result = IdentificationResult(max_rank=max_rank, far=far or 0.0)
    pairs = [(p, g) for p in range(len(labels)) for g in range(len(labels)) if p != g and labels[p] == labels[g]]
    result.num_pairs = len(pairs)
    for size in sizes:
        ranks = np.array([1 + int((scores[p, :size] >= genuine_matrix[p, g]).sum()) for p, g in pairs])
        result.cmc[size] = np.array([(ranks <= r).mean() for r in range(1, max_rank + 1)])
    if far is not None:
        impostors = np.sort(scores[:, :sizes[-1]].ravel())[::-1]
        m = int(np.floor(far * impostors.size))
        threshold = impostors[m] if m < impostors.size else -np.inf
        gen = [genuine_matrix[i, j] for i in range(len(labels)) for j in range(i + 1, len(labels))
               if labels[i] == labels[j]]
        result.threshold = float(threshold)
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

def extract_list_features(model: torch.nn.Module, root: str, paths: Sequence[str], batch_size: int = 64,
                          flip: bool = True, feature_dir: Optional[str] = None, file_ending: str = '_toponet.bin',
                          reuse: bool = True, desc: str = 'features', progress: bool = True) -> np.ndarray:
    """L2-normalised (flip-fused) features of the listed images: each aligned from its
    landmark JSON with ``norm_crop``, resized to the network's input. With
    ``feature_dir`` every feature is also written as a devkit file
    ``<feature_dir>/<path><file_ending>``, and existing files are read instead of
    recomputed when ``reuse`` is set (an interrupted extraction resumes)."""
    import cv2
    from tqdm import tqdm
    from .align import load_aligned
    from .verification import extract_features
    size = int(getattr(model, 'input_size', 112))
    features: List[Optional[np.ndarray]] = [None] * len(paths)
    todo = []
    for i, rel in enumerate(paths):
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
        feats = extract_features(model, np.stack(crops), batch_size=len(crops), flip=flip)
        for i, feat in zip(batch, feats):
            features[i] = feat
            if feature_dir:
                write_feature_file(os.path.join(feature_dir, paths[i] + file_ending), feat)
    if not features:
        raise ValueError(f'the image list for {root} is empty')
    dims = {f.shape for f in features}
    if len(dims) != 1:
        raise ValueError(f'features of different sizes {sorted(dims)} (stale files in {feature_dir}?)')
    return np.stack(features).astype(np.float32)


def evaluate_megaface(model: torch.nn.Module, facescrub_root: str, facescrub_list: str, megaface_root: str,
                      megaface_list: str, facescrub_noises: Optional[str] = None,
                      megaface_noises: Optional[str] = None, sizes: Sequence[int] = DEFAULT_SIZES,
                      max_rank: int = 10, far: float = 1e-6, feature_dir: Optional[str] = None,
                      file_ending: str = '_toponet.bin', batch_size: int = 64,
                      progress: bool = True) -> Tuple[IdentificationResult, dict]:
    """Features for the probe and distractor lists, insightface's cleaning when the
    noise lists are given, then ``identify`` over the distractor set sizes that fit."""
    probe_paths, probe_ids = read_image_list(facescrub_list)
    distractor_paths, _ = read_image_list(megaface_list)
    if probe_ids is None:  # insightface's text lists: the identity is the image's folder
        probe_ids = [os.path.basename(os.path.dirname(p)) for p in probe_paths]
    sub = lambda name: os.path.join(feature_dir, name) if feature_dir else None  # noqa: E731
    probes = extract_list_features(model, facescrub_root, probe_paths, batch_size, True, sub('facescrub'),
                                   file_ending, desc='probes', progress=progress)
    info = dict(num_probes=len(probe_paths), num_identities=len(set(probe_ids)))
    if megaface_noises:
        noisy = read_noise_list(megaface_noises)
        keep = [p for p in distractor_paths if p not in noisy]
        info['removed_distractors'] = len(distractor_paths) - len(keep)
        distractor_paths = keep
    distractors = extract_list_features(model, megaface_root, distractor_paths, batch_size, True, sub('megaface'),
                                        file_ending, desc='distractors', progress=progress)
    labels = np.unique(np.asarray(probe_ids), return_inverse=True)[1]
    if facescrub_noises:
        noisy_names = read_noise_list(facescrub_noises)
        noisy = np.array([os.path.basename(p) in noisy_names for p in probe_paths])
        info['replaced_probes'] = int(noisy.sum())
        probes = clean_probes(probes, labels, noisy)
    info['num_distractors'] = len(distractor_paths)
    usable = [s for s in sizes if s <= len(distractor_paths)] or [len(distractor_paths)]
    result = identify(probes, labels, distractors, sizes=usable, max_rank=max_rank, far=far, progress=progress)
    return result, info
