"""A network stage as a DAG of nodes with learnable edge weights (paper Eq. 1).

Node i computes ``x_i = o_i(sum_j alpha_ji * x_j)`` over its input edges. Node 0 (the
stage input) and node ``N - 1`` (the stage output) do not transform features.

Resolution change: the first computing node (node 1, whose only possible input is the
stage input) carries the stride and the channel change. Every other edge that leaves the
stage input ends at a node working at the new resolution and width, so those edges read
one shared *input projection* of the stage input: a node op of the same type, built with
the stage's stride and channel change, computed once per forward and shared by all those
edges. It exists only when such edges exist and the shape changes. For TopoNet C=64 this
adds 0.71M parameters, which is what brings the network to the paper's 23.23M (see
``backbones/toponet.py``).
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .graphs import GraphSpec
from .ops import create_node_op

__all__ = ['DAGStage']


class DAGStage(nn.Module):
    """One stage: a DAG of identical node ops, aggregated by learnable edge weights.

    Args:
        graph (GraphSpec): The stage topology.
        in_chs (int): Channels of the stage input.
        out_chs (int): Channels of every computing node and of the stage output.
        stride (int): Spatial stride of the stage, applied by the first computing node
            and by the input projection.
        node_op (str): Node operation name, see ``backbones.ops.NODE_OPS``.
        alpha_trainable (bool): Learn the edge weights (``True``) or keep them fixed at
            their initial value 1 (the paper's "Complete" baseline without alpha).
        node_kwargs (dict, optional): Extra arguments for the node op.

    Attributes:
        edge_weights (nn.Parameter): alpha, one value per edge in ``graph.edges`` order.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> stage = DAGStage(complete_graph(6), 8, 16, stride=2)
        >>> stage(torch.randn(2, 8, 32, 32)).shape
        torch.Size([2, 16, 16, 16])
    """

    in_edges: List[List[Tuple[int, int]]]  # TorchScript needs the attribute type spelled out
    __jit_unused_properties__ = ['alpha_trainable']

    def __init__(self, graph: GraphSpec, in_chs: int, out_chs: int, stride: int = 1,
                 node_op: str = 'sep', alpha_trainable: bool = True, node_kwargs: Optional[Dict] = None):
        super().__init__()
        if not isinstance(graph, GraphSpec):
            raise TypeError(f'graph must be a GraphSpec, got {type(graph).__name__}')
        node_kwargs = dict(node_kwargs or {})
        self.graph = graph
        self.num_nodes = graph.num_nodes
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        # (edge index, source node) of every input edge, per node; edge 0 is always (0, 1)
        self.in_edges = [graph.input_edges(i) for i in range(graph.num_nodes)]
        reshapes = stride != 1 or in_chs != out_chs
        needs_proj = reshapes and any(src == 0 and dst != 1 for src, dst in graph.edges)
        self.input_proj = create_node_op(node_op, in_chs, out_chs, stride, **node_kwargs) if needs_proj else None
        self.nodes = nn.ModuleList([
            create_node_op(node_op, in_chs if i == 1 else out_chs, out_chs, stride if i == 1 else 1, **node_kwargs)
            for i in range(1, graph.num_nodes - 1)
        ])
        self.edge_weights = nn.Parameter(torch.ones(graph.num_edges), requires_grad=alpha_trainable)
        # The topology travels inside every state dict, so loading weights into a network
        # wired differently fails loudly instead of silently mixing graphs.
        self.register_buffer('edge_index', torch.tensor(graph.edges, dtype=torch.long).reshape(-1, 2))
        in_degree = graph.in_degree
        self.register_buffer(
            'edge_in_degree', torch.tensor([float(in_degree[dst]) for _, dst in graph.edges]), persistent=False)

    @property
    def alpha_trainable(self) -> bool:
        return self.edge_weights.requires_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.edge_weights
        # Node 1 reads the raw stage input (and changes its shape); later readers of the
        # stage input read the projection.
        projected = self.input_proj(x) if self.input_proj is not None else x
        outputs: List[torch.Tensor] = [projected]
        for k, node in enumerate(self.nodes):
            if k == 0:
                outputs.append(node(x * alpha[0]))
            else:
                outputs.append(node(self._aggregate(outputs, self.in_edges[k + 1], alpha)))
        return self._aggregate(outputs, self.in_edges[self.num_nodes - 1], alpha)

    @staticmethod
    def _aggregate(outputs: List[torch.Tensor], edges: List[Tuple[int, int]], alpha: torch.Tensor) -> torch.Tensor:
        # A running fused multiply-add: never materialises a stack of all inputs.
        e0, src0 = edges[0]
        acc = outputs[src0] * alpha[e0]
        for i in range(1, len(edges)):
            e, src = edges[i]
            acc = torch.addcmul(acc, outputs[src], alpha[e])
        return acc

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + 'edge_index'
        if key in state_dict and not torch.equal(state_dict[key].to(self.edge_index), self.edge_index):
            theirs = state_dict[key]
            raise ValueError(
                f'{key}: the weights are for another topology ({theirs.shape[0]} edges, first differing edge '
                f'{_first_difference(theirs, self.edge_index)}) than this {self.graph.kind} stage '
                f'({self.graph.num_edges} edges); rebuild the model with the checkpoint\'s graphs')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @torch.no_grad()
    def alpha_matrix(self) -> torch.Tensor:
        """Edge weights as an ``(N, N)`` matrix ``M[dst, src]`` (zero where no edge)."""
        mat = torch.zeros(self.num_nodes, self.num_nodes, dtype=self.edge_weights.dtype)
        src = torch.tensor([s for s, _ in self.graph.edges], dtype=torch.long)
        dst = torch.tensor([d for _, d in self.graph.edges], dtype=torch.long)
        mat[dst, src] = self.edge_weights.detach().cpu()
        return mat

    def extra_repr(self) -> str:
        return (f'kind={self.graph.kind}, num_nodes={self.num_nodes}, num_edges={self.graph.num_edges}, '
                f'in_chs={self.in_chs}, out_chs={self.out_chs}, stride={self.stride}, '
                f'alpha_trainable={self.alpha_trainable}')


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    for i in range(min(a.shape[0], b.shape[0])):
        if a[i].tolist() != b[i].tolist():
            return f'#{i}: {tuple(a[i].tolist())} vs {tuple(b[i].tolist())}'
    return f'#{min(a.shape[0], b.shape[0])}: one graph has more edges'
