"""The stacked formulation of a DAG stage's alpha-weighted aggregation.

Every node output is copied once into one ``(rows, M)`` buffer ``X`` (``M`` = elements of a
node output, in its memory order, so channels_last stays channels_last), and the stage's
edge weights are laid out once per step as a dense coefficient matrix ``A[dst, src]``.

* Forward: node i's input ``sum_j A[i, j] x_j`` over the run of source rows it reads is one
  matrix-vector product (reads each source once). Row 0 is the stage input as its readers see
  it (the input projection where the stage changes shape); with ``input_path='projection'``
  node 1 reads it like every other node, with ``'node1'`` node 1 reads the raw stage input
  outside the buffer (``StageLayout(first_gathered=...)``).
* Backward, pull style: a node input's gradient ``g_i`` is written once, as row i of a
  gradient buffer ``G``. Node j's output gradient ``sum_i A[i, j] g_i`` over its readers is
  pulled by one matrix-vector product when autograd reaches node j, i.e. after every
  reader has written its row. Nothing is accumulated in place.
* The alpha gradient ``<g_i, x_j>`` of every edge is one GEMM ``G @ X^T`` at the end of the
  stage's backward, instead of one matrix-vector product per node.

Per step that is about ``E`` row reads forward and ``E`` backward for ``E`` edges, against
``E`` forward and ``3E`` backward (gradient accumulation reads and writes every row) for a
per-node push, and O(N) kernels per stage instead of the O(N^2) per-edge kernels of
``DAGStage``'s ``weighted_sum`` path.

Autograd never sees the buffers; order comes from *tokens*, empty tensors threaded through
custom functions: ``_Publish`` copies a node output in and hands its readers a token;
readers take the tokens of every row they read, so a row's ``_Publish`` backward runs only
after all its readers' backward. ``_Coefficients`` hands every reader a token of alpha, so
its backward (the GEMM) runs after all of them. Node outputs are therefore not kept alive
beside the buffer. Not supported: double backward, and torch.compile / TorchScript (those
use the reference path).

Every weighted sum of rows (a gather forward, a pull backward) is ``weighted_row_sum``: on
CUDA a Triton kernel that streams the k rows once with a float32 accumulator (cuBLAS gemv
on these k x 10^7 operands reached about a quarter of the H200's memory bandwidth,
``docs/performance.md``), elsewhere ``torch.mv``. ``TOPONET_ROW_SUM=torch`` in the
environment at import forces ``torch.mv`` everywhere (for comparisons).
"""
from __future__ import annotations

import functools
import os
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['StageLayout', 'StackedWorkspace', 'coefficients', 'publish', 'gather', 'weighted_row_sum']


@functools.lru_cache(maxsize=None)
def _triton_row_sum():
    """The Triton kernel, compiled on first use; None when Triton is unavailable."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def row_sum_kernel(rows_ptr, coeffs_ptr, out_ptr, num_rows, numel, row_stride,
                       BLOCK: tl.constexpr, ACC_FP64: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        acc_type = tl.float64 if ACC_FP64 else tl.float32
        acc = tl.zeros([BLOCK], dtype=acc_type)
        pointers = rows_ptr + offsets  # 64-bit: advanced by one row per step
        for r in range(num_rows):
            coeff = tl.load(coeffs_ptr + r).to(acc_type)
            acc += coeff * tl.load(pointers, mask=mask, other=0.0).to(acc_type)
            pointers += row_stride
        tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)

    def launch(rows: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        num_rows, numel = rows.shape
        out = torch.empty(numel, dtype=rows.dtype, device=rows.device)
        block = 2048
        row_sum_kernel[(triton.cdiv(numel, block),)](rows, coeffs.contiguous(), out, num_rows, numel, rows.stride(0),
                                                     BLOCK=block, ACC_FP64=rows.dtype == torch.float64, num_warps=8)
        return out

    return launch


# read once: weighted_row_sum runs twice per node and step
_TRITON_ALLOWED = os.environ.get('TOPONET_ROW_SUM', 'auto') != 'torch'


def weighted_row_sum(rows: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``sum_r coeffs[r] * rows[r]`` for a ``(k, M)`` matrix of unit column stride; ``(M,)``."""
    if rows.is_cuda and rows.stride(1) == 1 and _TRITON_ALLOWED:
        kernel = _triton_row_sum()
        if kernel is not None:
            return kernel(rows, coeffs.to(torch.float64 if rows.dtype == torch.float64 else torch.float32))
    with torch.autocast(rows.device.type, enabled=False):  # no casting copy of the buffer
        return torch.mv(rows.t(), coeffs.to(rows.dtype))


class StageLayout:
    """Index tables of one stage's graph for the stacked path, built once per stage.

    Args:
        num_nodes (int): Nodes of the stage, input node 0 and output node ``num_nodes - 1``.
        edges (sequence): ``(src, dst)`` per edge, in the order of the stage's edge weights.
        first_gathered (int): The first node whose input is gathered from the rows: 2 when
            node 1 reads the raw stage input itself (``input_path='node1'``; its edge (0, 1)
            stays outside the buffer), 1 when node 1 reads row 0 like every other node.
    """

    def __init__(self, num_nodes: int, edges: Sequence[Tuple[int, int]], first_gathered: int = 2):
        if first_gathered not in (1, 2):
            raise ValueError(f'first_gathered must be 1 or 2, got {first_gathered!r}')
        self.num_nodes = num_nodes
        self.first_gathered = first_gathered
        self.rows = num_nodes - 1  # node outputs 0..N-2; the stage output is never published
        sources = [[] for _ in range(num_nodes)]
        readers = [[] for _ in range(num_nodes)]
        gathered = []  # edges whose weight enters through the coefficient matrix (dst >= first_gathered)
        for e, (src, dst) in enumerate(edges):
            if dst >= first_gathered:
                sources[dst].append(src)
                readers[src].append(dst)
                gathered.append(e)
        self.source_runs = [(min(s), max(s) + 1) if s else None for s in sources]
        self.reader_runs = [(min(r), max(r) + 1) if r else None for r in readers]
        self.row_is_read = [bool(r) for r in readers]
        # dense: the runs of rows the gathers read hold at most 1.5x as many rows as there are edges
        run_rows = sum(run[1] - run[0] for run in self.source_runs if run)
        self.dense = run_rows <= 1.5 * len(gathered)
        # on the CPU explicitly: a model built under a device context (timm's create_model(device=...))
        # must not file meta or CUDA tables under the CPU key
        cpu = torch.device('cpu')
        gathered_edges = torch.tensor(gathered, dtype=torch.long, device=cpu)
        # flat position of each gathered edge in A (N x rows) and in G @ X^T ((N - first_gathered) x rows)
        coeff_index = torch.tensor([edges[e][1] * self.rows + edges[e][0] for e in gathered], dtype=torch.long,
                                   device=cpu)
        grad_index = torch.tensor([(edges[e][1] - first_gathered) * self.rows + edges[e][0] for e in gathered],
                                  dtype=torch.long, device=cpu)
        self._indices = {torch.device('cpu'): (gathered_edges, coeff_index, grad_index)}

    def indices(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(gathered_edges, coeff_index, grad_index)`` on ``device``, copied there once.
        Never moved in place: replicas of a module on several devices share the layout."""
        cached = self._indices.get(device)
        if cached is None:
            cached = tuple(t.to(device) for t in self._indices[torch.device('cpu')])
            self._indices[device] = cached
        return cached


class StackedWorkspace:
    """One forward (and backward) of one stage: buffers, their layout, the coefficients."""

    __slots__ = ('layout', 'shape', 'channels_last', 'buffer', 'grad_buffer', 'coeffs')

    def __init__(self, layout: StageLayout):
        self.layout = layout
        self.shape: Optional[Tuple[int, ...]] = None
        self.channels_last = False
        self.buffer: Optional[torch.Tensor] = None
        self.grad_buffer: Optional[torch.Tensor] = None
        self.coeffs: Optional[torch.Tensor] = None

    def _allocate(self, like: torch.Tensor) -> None:
        self.shape = tuple(like.shape)
        self.channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
            memory_format=torch.channels_last)
        self.buffer = torch.empty((self.layout.rows, like.numel()), dtype=like.dtype, device=like.device)

    def as_nchw(self, flat: torch.Tensor) -> torch.Tensor:
        """A flat row (or vector) seen as a node-output tensor in the buffer's layout."""
        if self.channels_last:
            n, c, h, w = self.shape
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)
        return flat.view(self.shape)

    def write(self, row: int, x: torch.Tensor) -> None:
        if self.buffer is None:
            self._allocate(x)
        elif tuple(x.shape) != self.shape or x.dtype != self.buffer.dtype:
            raise ValueError(f'node output {tuple(x.shape)} {x.dtype} does not match the stage buffer '
                             f'{self.shape} {self.buffer.dtype}')
        self.as_nchw(self.buffer[row]).copy_(x)

    def coeff_row(self, node: int) -> torch.Tensor:
        start, stop = self.layout.source_runs[node]
        return self.coeffs[node, start:stop]

    def grad_rows(self) -> torch.Tensor:
        # zeros: a reader whose backward never ran (its output unused) contributes nothing
        if self.grad_buffer is None:
            self.grad_buffer = torch.zeros((self.layout.num_nodes, self.buffer.shape[1]), dtype=self.buffer.dtype,
                                           device=self.buffer.device)
        return self.grad_buffer


class _Coefficients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha: torch.Tensor, ws: StackedWorkspace) -> torch.Tensor:
        ws.coeffs = _coefficient_matrix(alpha, ws.layout)
        ctx.ws, ctx.alpha_shape, ctx.alpha_dtype = ws, alpha.shape, alpha.dtype
        ctx.set_materialize_grads(False)
        return alpha.new_empty(0)

    @staticmethod
    def backward(ctx, _token_grad):
        ws = ctx.ws
        layout = ws.layout
        device = ws.buffer.device
        gathered_edges, _, grad_index = layout.indices(device)
        grad_alpha = torch.zeros(ctx.alpha_shape, dtype=ctx.alpha_dtype, device=device)
        if ws.grad_buffer is not None:
            with torch.autocast(ws.buffer.device.type, enabled=False):
                # <g_i, x_j> for every (reader i >= first_gathered, row j): one GEMM over the whole stage
                inner = torch.mm(ws.grad_buffer[layout.first_gathered:], ws.buffer.t())
            grad_alpha.index_copy_(0, gathered_edges, inner.view(-1).index_select(0, grad_index).to(ctx.alpha_dtype))
        return grad_alpha, None


class _Publish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, ws: StackedWorkspace, row: int) -> torch.Tensor:
        ws.write(row, x)
        ctx.ws, ctx.row = ws, row
        ctx.set_materialize_grads(False)
        return x.new_empty(0)

    @staticmethod
    def backward(ctx, _token_grad):
        ws, row = ctx.ws, ctx.row
        if ws.grad_buffer is None or ws.layout.reader_runs[row] is None:  # no reader needed a gradient
            return None, None, None
        start, stop = ws.layout.reader_runs[row]
        grad = weighted_row_sum(ws.grad_buffer[start:stop], ws.coeffs[start:stop, row])
        return ws.as_nchw(grad), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coeff_token: torch.Tensor, ws: StackedWorkspace, node: int, *tokens: torch.Tensor) -> torch.Tensor:
        start, stop = ws.layout.source_runs[node]
        out = weighted_row_sum(ws.buffer[start:stop], ws.coeff_row(node))
        ctx.ws, ctx.node, ctx.num_tokens = ws, node, len(tokens)
        ctx.set_materialize_grads(False)
        return ws.as_nchw(out)

    @staticmethod
    def backward(ctx, grad: Optional[torch.Tensor]):
        ws = ctx.ws
        if grad is not None:
            ws.as_nchw(ws.grad_rows()[ctx.node]).copy_(grad)
        else:
            ws.grad_rows()
        empty = ws.buffer.new_zeros(0)
        return (empty, None, None) + (empty,) * ctx.num_tokens


def coefficients(ws: StackedWorkspace, alpha: torch.Tensor) -> torch.Tensor:
    """Lay ``alpha`` (the stage's edge weights) out as the coefficient matrix; returns the
    token every ``gather`` must take."""
    if torch.is_grad_enabled() and alpha.requires_grad:
        return _Coefficients.apply(alpha, ws)
    ws.coeffs = _coefficient_matrix(alpha, ws.layout)
    return alpha.new_empty(0)


def publish(ws: StackedWorkspace, row: int, x: torch.Tensor) -> torch.Tensor:
    """Copy ``x`` into row ``row``; returns the token its readers must take."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Publish.apply(x, ws, row)
    ws.write(row, x)
    return x.new_empty(0)


def gather(ws: StackedWorkspace, node: int, coeff_token: torch.Tensor, tokens: List[torch.Tensor]) -> torch.Tensor:
    """Node ``node``'s input: ``sum_j A[node, j] * row[j]`` over its run of source rows."""
    start, stop = ws.layout.source_runs[node]
    run_tokens = tokens[start:stop]
    if torch.is_grad_enabled() and (coeff_token.requires_grad or any(t.requires_grad for t in run_tokens)):
        return _Gather.apply(coeff_token, ws, node, *run_tokens)
    return ws.as_nchw(weighted_row_sum(ws.buffer[start:stop], ws.coeff_row(node)))


def _coefficient_matrix(alpha: torch.Tensor, layout: StageLayout) -> torch.Tensor:
    """``A[dst, src]`` (N x rows, zero where there is no edge) from the edge weights."""
    flat = alpha.new_zeros(layout.num_nodes * layout.rows)
    gathered_edges, coeff_index, _ = layout.indices(alpha.device)
    flat.index_copy_(0, coeff_index, alpha.detach().index_select(0, gathered_edges))
    return flat.view(layout.num_nodes, layout.rows)
