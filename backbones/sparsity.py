"""The sparsity constraint on edge weights (paper section 2.4, Eq. 4, Algorithm 1).

``L = L_task + lambda * L_sparse`` with ``L_sparse`` an L1 norm of the edge weights:

* ``uniform``: every alpha weighs 1, so ``dL/dalpha_ji += lambda * sign(alpha_ji)``.
* ``adaptive``: node i's input edges weigh ``log(delta_i)``, its in-degree in the stage
  graph, so ``dL/dalpha_ji += lambda * log(delta_i) * sign(alpha_ji)``: dense inputs are
  pushed harder; a node with a single input (log 1 = 0) is not pushed at all.
* ``none``: no penalty.

This is the project's single implementation: plain loops add ``TopologySparsity(...)(model)``
to their loss; mmengine runs use ``backbones.mmengine_optim`` which calls the same object.
Frozen edge weights (``alpha_trainable=False``) are skipped.
"""
from __future__ import annotations

from typing import Iterable, Iterator, List

import torch
from torch import nn

from .dag import DAGStage

__all__ = ['SPARSITY_MODES', 'TopologySparsity', 'dag_stages', 'edge_penalty_scale', 'alpha_parameters',
           'param_groups_alpha_no_decay']

SPARSITY_MODES = ('none', 'uniform', 'adaptive')


def dag_stages(model: nn.Module) -> Iterator[DAGStage]:
    """Every ``DAGStage`` inside ``model`` (unwrapping DDP-style ``.module``)."""
    for module in model.modules():
        if isinstance(module, DAGStage):
            yield module


def alpha_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The edge-weight parameters of every DAG stage in ``model``."""
    return [stage.edge_weights for stage in dag_stages(model)]


def edge_penalty_scale(stage: DAGStage, mode: str) -> torch.Tensor:
    """Per-edge weight of the L1 term: 1 (uniform) or log(in-degree of dst) (adaptive)."""
    _check_mode(mode)
    if mode == 'none':
        return torch.zeros_like(stage.edge_in_degree)
    if mode == 'uniform':
        return torch.ones_like(stage.edge_in_degree)
    return torch.log(stage.edge_in_degree)


def _check_mode(mode) -> None:
    if mode not in SPARSITY_MODES:
        raise ValueError(f'unknown sparsity mode {mode!r}; expected one of {SPARSITY_MODES}')


class TopologySparsity:
    """Callable returning ``lambda * L_sparse`` for a model, to add to the task loss.

    Args:
        mode (str): ``'none'``, ``'uniform'`` or ``'adaptive'``.
        lam (float): lambda, >= 0. The paper uses 1e-4 throughout.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> stage = DAGStage(complete_graph(4), 4, 4)
        >>> float(TopologySparsity('uniform', lam=0.5)(stage).detach())  # 6 edges at alpha=1
        3.0
    """

    def __init__(self, mode: str = 'none', lam: float = 1e-4):
        _check_mode(mode)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0.0:
            raise ValueError(f'sparsity lambda must be a number >= 0, got {lam!r}')
        self.mode = mode
        self.lam = float(lam)

    @property
    def active(self) -> bool:
        return self.mode != 'none' and self.lam > 0.0

    def __call__(self, model: nn.Module) -> torch.Tensor:
        terms = []
        if self.active:
            for stage in dag_stages(model):
                if stage.alpha_trainable:
                    scale = edge_penalty_scale(stage, self.mode).to(stage.edge_weights)
                    terms.append((scale * stage.edge_weights.abs()).sum())
        if not terms:
            device = next((p.device for p in model.parameters()), torch.device('cpu'))
            return torch.zeros((), device=device)
        return self.lam * torch.stack(terms).sum()

    def __repr__(self) -> str:
        return f'TopologySparsity(mode={self.mode!r}, lam={self.lam:g})'

    @classmethod
    def from_config(cls, cfg) -> 'TopologySparsity':
        """Build from ``None``, a mode string, or ``dict(mode=..., lam=...)``."""
        if cfg is None:
            return cls('none')
        if isinstance(cfg, str):
            return cls(cfg)
        if isinstance(cfg, TopologySparsity):
            return cfg
        if not hasattr(cfg, 'keys'):
            raise ValueError(f'sparsity config must be None, a mode string or a dict, got {cfg!r}')
        unknown = set(cfg.keys()) - {'mode', 'lam'}
        if unknown:
            raise ValueError(f'sparsity config takes keys mode and lam, got unknown {sorted(unknown)}')
        return cls(cfg.get('mode', 'none'), cfg.get('lam', 1e-4))


def param_groups_alpha_no_decay(model: nn.Module, weight_decay: float, alpha_weight_decay: float = 0.0,
                                extra_no_decay: Iterable[str] = ()) -> List[dict]:
    """Optimizer param groups: edge weights without weight decay by default.

    Norm and bias parameters (ndim <= 1) are also left undecayed, the usual convention;
    ``extra_no_decay`` names more parameters to leave undecayed.
    """
    alpha_ids = {id(p) for p in alpha_parameters(model)}
    extra = set(extra_no_decay)
    alpha, decay, no_decay = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in alpha_ids:
            alpha.append(param)
        elif param.ndim <= 1 or name in extra:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{'params': decay, 'weight_decay': weight_decay},
              {'params': no_decay, 'weight_decay': 0.0}]
    if alpha:
        groups.append({'params': alpha, 'weight_decay': alpha_weight_decay})
    return [g for g in groups if g['params']]

