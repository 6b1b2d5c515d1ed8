"""The stacked formulation of a DAG stage's alpha-weighted aggregation.

Every node output is copied once into one ``(rows, M)`` buffer (``M`` = elements of a node
output, in its memory order, so channels_last stays channels_last). A node's input
``sum_j alpha_ji x_j`` over a run of consecutive source rows is then one matrix-vector
product; its backward is one more (``grad_alpha = X @ g``) and one rank-1 update of a
shared gradient buffer (``G += outer(alpha, g)``). That is O(N) kernels per stage instead
of the O(N^2) per-edge kernels of ``DAGStage``'s ``weighted_sum`` path, which is what a GPU
pays for most on a complete DAG (325 edges in TopoNet's third stage).

Autograd never sees the buffer: a ``_Publish`` node copies a node output in and hands its
readers an empty *token*; readers take the tokens of every row they read, so the engine
runs a row's ``_Publish`` backward (which returns the row of the gradient buffer) only
after every reader has added into that row. Node outputs are therefore not kept alive
beside the buffer. Not supported: double backward, and torch.compile / TorchScript (those
use the reference path).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['StackedWorkspace', 'publish', 'gather']


class StackedWorkspace:
    """Forward buffer, its layout, and (from the first backward on) the gradient buffer."""

    __slots__ = ('rows', 'shape', 'channels_last', 'buffer', 'grad_buffer')

    def __init__(self, rows: int):
        self.rows = rows
        self.shape: Optional[Tuple[int, ...]] = None
        self.channels_last = False
        self.buffer: Optional[torch.Tensor] = None
        self.grad_buffer: Optional[torch.Tensor] = None

    def _allocate(self, like: torch.Tensor) -> None:
        self.shape = tuple(like.shape)
        self.channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
            memory_format=torch.channels_last)
        self.buffer = torch.empty((self.rows, like.numel()), dtype=like.dtype, device=like.device)

    def as_nchw(self, flat: torch.Tensor) -> torch.Tensor:
        """A flat row (or vector) seen as a node-output tensor in the buffer's layout."""
        if self.channels_last:
            n, c, h, w = self.shape
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)
        return flat.view(self.shape)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a 1-D tensor in the buffer's element order (copies only on a layout mismatch)."""
        if self.channels_last:
            return x.permute(0, 2, 3, 1).reshape(-1)
        return x.reshape(-1)

    def write(self, row: int, x: torch.Tensor) -> None:
        if self.buffer is None:
            self._allocate(x)
        elif tuple(x.shape) != self.shape or x.dtype != self.buffer.dtype:
            raise ValueError(f'node output {tuple(x.shape)} {x.dtype} does not match the stage buffer '
                             f'{self.shape} {self.buffer.dtype}')
        self.as_nchw(self.buffer[row]).copy_(x)

    def grad_rows(self) -> torch.Tensor:
        if self.grad_buffer is None:
            self.grad_buffer = torch.zeros_like(self.buffer)
        return self.grad_buffer


class _Publish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, ws: StackedWorkspace, row: int) -> torch.Tensor:
        ws.write(row, x)
        ctx.ws, ctx.row = ws, row
        ctx.set_materialize_grads(False)
        return x.new_empty(0)

    @staticmethod
    def backward(ctx, _token_grad):
        ws = ctx.ws
        if ws.grad_buffer is None:  # no reader needed a gradient
            return None, None, None
        return ws.as_nchw(ws.grad_buffer[ctx.row]), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha: torch.Tensor, ws: StackedWorkspace, start: int, weights_index: torch.Tensor,
                *tokens: torch.Tensor) -> torch.Tensor:
        stop = start + len(tokens)
        coeffs = _coefficients(alpha, weights_index, len(tokens), ws.buffer.dtype)
        with torch.autocast(ws.buffer.device.type, enabled=False):  # no casting copy of the buffer
            out = torch.mv(ws.buffer[start:stop].t(), coeffs)
        ctx.ws, ctx.start, ctx.stop, ctx.alpha_dtype = ws, start, stop, alpha.dtype
        ctx.save_for_backward(coeffs, weights_index)
        return ws.as_nchw(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        coeffs, weights_index = ctx.saved_tensors
        ws = ctx.ws
        g = ws.flat(grad).to(ws.buffer.dtype)
        grad_alpha = None
        if ctx.needs_input_grad[0]:
            grad_alpha = torch.mv(ws.buffer[ctx.start:ctx.stop], g).index_select(0, weights_index)
            grad_alpha = grad_alpha.to(ctx.alpha_dtype)
        ws.grad_rows()[ctx.start:ctx.stop].addr_(coeffs, g)
        return (grad_alpha, None, None, None) + tuple(torch.zeros(0, device=grad.device, dtype=grad.dtype)
                                                      for _ in range(ctx.stop - ctx.start))


def publish(ws: StackedWorkspace, row: int, x: torch.Tensor) -> torch.Tensor:
    """Copy ``x`` into row ``row``; returns the token its readers must take."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Publish.apply(x, ws, row)
    ws.write(row, x)
    return x.new_empty(0)


def gather(ws: StackedWorkspace, alpha: torch.Tensor, sources: Sequence[int], tokens: List[torch.Tensor],
           weights_index: torch.Tensor) -> torch.Tensor:
    """``sum_k alpha[k] * row[sources[k]]`` over the run of rows ``min(sources)..max(sources)``
    (``weights_index[k]`` = position of ``sources[k]`` in that run)."""
    start, stop = min(sources), max(sources) + 1
    run_tokens = tokens[start:stop]
    if torch.is_grad_enabled() and (alpha.requires_grad or any(t.requires_grad for t in run_tokens)):
        return _Gather.apply(alpha, ws, start, weights_index, *run_tokens)
    coeffs = _coefficients(alpha, weights_index, stop - start, ws.buffer.dtype)
    with torch.autocast(ws.buffer.device.type, enabled=False):
        return ws.as_nchw(torch.mv(ws.buffer[start:stop].t(), coeffs))


def _coefficients(alpha: torch.Tensor, weights_index: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """alpha scattered over a run of rows (zero where a row is no source), in the buffer's dtype."""
    return alpha.new_zeros(length).index_copy_(0, weights_index, alpha).to(dtype)
