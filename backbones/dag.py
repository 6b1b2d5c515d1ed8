"""A network stage as a DAG of nodes with learnable edge weights (paper Eq. 1).

Node i computes ``x_i = o_i(sum_j alpha_ji * x_j)`` over its input edges. Node 0 (the
stage input) and node ``N - 1`` (the stage output) do not transform features.

Resolution change. A stage whose shape changes (stride != 1 or in_chs != out_chs) reaches
its nodes at the new resolution and width in one of two ways (``input_path``):

* ``'projection'`` (TopoNet): the stage input is projected once, by a node op of the same
  type built with the stage's stride and channel change, and *every* edge leaving node 0,
  (0, 1) included, reads that projection. Every computing node, node 1 included, is built
  alike (out_chs -> out_chs, stride 1), so a stage's ops do not depend on its graph: two
  topologies of the same widths and node counts differ in parameters only by their number
  of edge weights.
* ``'node1'`` (ResNet-CIFAR, MobileNetV2: their originals' counts): the first computing node
  (node 1, whose only possible input is the stage input) reads the raw stage input and
  carries the stride and channel change; every other edge that leaves the stage input reads
  a shared input projection, which exists only when such edges exist. The parameter count
  then follows the graph.

A stage that does not change shape has no projection in either mode, and then both modes
build the same network.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from . import aggregation as stacked
from .errors import InputError
from .graphs import GraphSpec
from .ops import create_node_op

__all__ = ['DAGStage', 'AGGREGATIONS', 'INPUT_PATHS']

# Eager formulations of the alpha-weighted sums (same results; see docs/performance.md):
# 'weighted_sum': one fused autograd node per computing node, per-edge multiply-adds inside
#     (fastest measured on CPU);
# 'stacked': node outputs in one buffer, one weighted row sum per node forward and one per
#     node backward, one alpha GEMM per stage (aggregation.py; 2.3x faster training and 3.4x
#     faster inference than 'weighted_sum' on an H200);
# 'auto': 'stacked' for CUDA tensors when the stage is dense (the source runs it reads hold at
#     most 1.5x as many rows as it has edges) and alpha is not fixed at 1; else 'weighted_sum'.
AGGREGATIONS = ('auto', 'weighted_sum', 'stacked')

# How a shape-changing stage's input reaches its nodes (module docstring).
INPUT_PATHS = ('node1', 'projection')


class DAGStage(nn.Module):
    """One stage: a DAG of identical node ops, aggregated by learnable edge weights.

    Args:
        graph (GraphSpec): The stage topology.
        in_chs (int): Channels of the stage input.
        out_chs (int): Channels of every computing node and of the stage output.
        stride (int): Spatial stride of the stage, applied by the input projection and,
            with ``input_path='node1'``, by the first computing node.
        node_op (str): Node operation name, see ``backbones.ops.NODE_OPS``.
        alpha_trainable (bool): Learn the edge weights (``True``) or keep them fixed at
            their initial value 1 (the paper's "Complete" baseline without alpha).
        node_kwargs (dict, optional): Extra arguments for the node op.
        proj_op (str, optional): Op of the shared input projection; default: ``node_op``
            (with ``node_kwargs``). ResNet-CIFAR uses ``'conv1x1'``.
        input_path (str): ``'node1'`` (node 1 reads the raw stage input and changes its
            shape) or ``'projection'`` (every edge out of the stage input reads the
            projection; node 1 is an ordinary node); see the module docstring.
        aggregation (str): Eager formulation of the weighted sums, one of ``AGGREGATIONS``;
            changes speed and memory, not results. TorchScript and torch.compile always use
            the reference multiply-add chain, and so does torch.fx symbolic tracing.

    Attributes:
        edge_weights (nn.Parameter): alpha, one value per edge in ``graph.edges`` order.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> stage = DAGStage(complete_graph(6), 8, 16, stride=2)
        >>> stage(torch.randn(2, 8, 32, 32)).shape
        torch.Size([2, 16, 16, 16])
    """

    in_edges: List[List[Tuple[int, int]]]  # TorchScript needs the attribute type spelled out
    _node1_reads_input: bool  # node 1 reads the raw stage input (input_path 'node1' in a reshaping stage)
    __jit_unused_properties__ = ['alpha_trainable', 'aggregation']
    __jit_ignored_attributes__ = ['_unit_cache_key', '_unit_cache', '_in_slices', '_in_sources', '_aggregation',
                                  '_stacked_layout', '_node_op', '_node_kwargs', 'input_path']

    def __init__(self, graph: GraphSpec, in_chs: int, out_chs: int, stride: int = 1,
                 node_op: str = 'sep', alpha_trainable: bool = True, node_kwargs: Optional[Dict] = None,
                 proj_op: Optional[str] = None, aggregation: str = 'auto', input_path: str = 'node1'):
        super().__init__()
        if not isinstance(graph, GraphSpec):
            raise TypeError(f'graph must be a GraphSpec, got {type(graph).__name__}')
        if input_path not in INPUT_PATHS:
            raise InputError(f'unknown input_path {input_path!r}', 'DAGStage', f'one of {INPUT_PATHS}')
        self.input_path = input_path
        self.aggregation = aggregation
        node_kwargs = dict(node_kwargs or {})
        self._node_op, self._node_kwargs = node_op, node_kwargs
        self.graph = graph
        self.num_nodes = graph.num_nodes
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        # (edge index, source node) of every input edge, per node; edge 0 is always (0, 1).
        # Edges are sorted by destination, so node i's edge weights are one slice of alpha.
        self.in_edges = [graph.input_edges(i) for i in range(graph.num_nodes)]
        self._in_slices = [(e[0][0], e[-1][0] + 1) if e else (0, 0) for e in self.in_edges]
        self._in_sources = [[src for _, src in e] for e in self.in_edges]
        reshapes = stride != 1 or in_chs != out_chs
        # In a stage that keeps its shape node 1 can read the stage input as it is in both modes.
        self._node1_reads_input = input_path == 'node1' or not reshapes
        # the first node whose input is a weighted sum over published rows (row 0: the projection)
        first_gathered = 2 if self._node1_reads_input else 1
        self._stacked_layout = stacked.StageLayout(graph.num_nodes, graph.edges, first_gathered=first_gathered)
        needs_proj = reshapes and any(src == 0 and dst >= first_gathered for src, dst in graph.edges)
        if not needs_proj:
            self.input_proj = None
        elif proj_op is None or proj_op == node_op:
            self.input_proj = create_node_op(node_op, in_chs, out_chs, stride, **node_kwargs)
        else:
            self.input_proj = create_node_op(proj_op, in_chs, out_chs, stride)
        self.nodes = nn.ModuleList([
            create_node_op(node_op, in_chs, out_chs, stride, **node_kwargs) if i == 1 and self._node1_reads_input
            else create_node_op(node_op, out_chs, out_chs, 1, **node_kwargs)
            for i in range(1, graph.num_nodes - 1)
        ])
        self.edge_weights = nn.Parameter(torch.ones(graph.num_edges), requires_grad=alpha_trainable)
        self._unit_cache_key: Tuple[int, int] = (0, -1)
        self._unit_cache = False
        # The topology travels inside every state dict, so loading weights into a network
        # wired differently fails loudly instead of silently mixing graphs.
        self.register_buffer('edge_index', torch.tensor(graph.edges, dtype=torch.long).reshape(-1, 2))
        in_degree = graph.in_degree
        self.register_buffer(
            'edge_in_degree', torch.tensor([float(in_degree[dst]) for _, dst in graph.edges]), persistent=False)

    @property
    def alpha_trainable(self) -> bool:
        return self.edge_weights.requires_grad

    @property
    def aggregation(self) -> str:
        return self._aggregation

    @aggregation.setter
    def aggregation(self, mode: str) -> None:
        if mode not in AGGREGATIONS:
            raise ValueError(f'unknown aggregation {mode!r}; expected one of {AGGREGATIONS}')
        self._aggregation = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if not isinstance(x, torch.fx.Proxy):
                return self._forward_eager(x)
            # torch.fx symbolic tracing (timm's and torchvision's FX feature extraction) records
            # the reference chain below: the eager paths branch on the input's device and on
            # alpha's values, which a Proxy does not have.
        alpha = self.edge_weights
        unit = False
        # Readers of the stage input read the projection, except a node 1 that reads the raw
        # stage input itself (input_path 'node1').
        projected = self.input_proj(x) if self.input_proj is not None else x
        outputs: List[torch.Tensor] = [projected]
        for k, node in enumerate(self.nodes):
            if k == 0 and self._node1_reads_input:
                outputs.append(node(x if unit else x * alpha[0]))
            else:
                outputs.append(node(self._aggregate(outputs, self.in_edges[k + 1], alpha, unit)))
        return self._aggregate(outputs, self.in_edges[self.num_nodes - 1], alpha, unit)

    @staticmethod
    def _aggregate(outputs: List[torch.Tensor], edges: List[Tuple[int, int]], alpha: torch.Tensor,
                   unit: bool) -> torch.Tensor:
        # A running fused multiply-add: never materialises a stack of all inputs.
        e0, src0 = edges[0]
        if unit:  # fixed unit weights (classic networks, "Complete" baseline): a plain sum
            acc = outputs[src0]
            for i in range(1, len(edges)):
                acc = acc + outputs[edges[i][1]]
            return acc
        acc = outputs[src0] * alpha[e0]
        for i in range(1, len(edges)):
            e, src = edges[i]
            acc = torch.addcmul(acc, outputs[src], alpha[e])
        return acc

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as the scripted path; node inputs go through ``_WeightedSum``, one
        autograd node per node with no temporaries (see its docstring)."""
        use_stacked = self._aggregation == 'stacked' or (
            self._aggregation == 'auto' and x.is_cuda and self._stacked_layout.dense and not self._alpha_fixed_at_one())
        if use_stacked and not torch.compiler.is_compiling():
            return self._forward_stacked(x)
        alpha = self.edge_weights
        unit = self._alpha_fixed_at_one()
        projected = self.input_proj(x) if self.input_proj is not None else x
        outputs: List[torch.Tensor] = [projected]
        last = self.num_nodes - 1
        for i in range(1, self.num_nodes):
            if i == 1 and self._node1_reads_input:
                inp = x if unit else x * alpha[0]
            else:
                srcs = [outputs[j] for j in self._in_sources[i]]
                if unit:
                    inp = srcs[0]
                    for t in srcs[1:]:
                        inp = inp + t
                else:
                    start, end = self._in_slices[i]
                    inp = _WeightedSum.apply(alpha[start:end], *srcs)
            outputs.append(inp if i == last else self.nodes[i - 1](inp))
        return outputs[last]

    @torch.jit.unused
    def _forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as ``_forward_eager``, through ``backbones.aggregation`` (row i of the
        buffer holds node i's output; row 0 the stage input as the other nodes read it: the
        projection where there is one. With ``input_path='projection'`` node 1 reads row 0
        like every other node; with ``'node1'`` it reads the raw stage input outside the
        buffer)."""
        alpha = self.edge_weights
        ws = stacked.StackedWorkspace(self._stacked_layout)
        layout = ws.layout
        tokens: List[torch.Tensor] = []
        last = self.num_nodes - 1
        if layout.row_is_read[0]:
            tokens.append(stacked.publish(ws, 0, self.input_proj(x) if self.input_proj is not None else x))
        else:
            tokens.append(x.new_empty(0))  # row 0 is never read
        coeff_token = stacked.coefficients(ws, alpha)
        if self._node1_reads_input:
            out = self.nodes[0](x * alpha[0])
        else:
            out = self.nodes[0](stacked.gather(ws, 1, coeff_token, tokens))
        for i in range(2, self.num_nodes):
            tokens.append(stacked.publish(ws, i - 1, out))
            out = stacked.gather(ws, i, coeff_token, tokens)
            if i != last:
                out = self.nodes[i - 1](out)
        return out

    @torch.jit.unused
    def _alpha_fixed_at_one(self) -> bool:
        """Frozen edge weights that are all exactly 1 (cached on the tensor's version, so
        in-place edits and ``load_state_dict`` are seen)."""
        alpha = self.edge_weights
        if alpha.requires_grad or alpha.is_meta:  # meta tensors have no values to compare
            return False
        key = (alpha.data_ptr(), alpha._version)
        if self._unit_cache_key != key:
            self._unit_cache_key = key
            self._unit_cache = bool(torch.all(alpha == 1.0))
        return self._unit_cache

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + 'edge_index'
        if key in state_dict and not torch.equal(state_dict[key].to(self.edge_index), self.edge_index):
            theirs = state_dict[key]
            raise ValueError(
                f'{key}: the weights are for another topology ({theirs.shape[0]} edges, first differing edge '
                f'{_first_difference(theirs, self.edge_index)}) than this {self.graph.kind} stage '
                f'({self.graph.num_edges} edges); rebuild the model with the checkpoint\'s graphs')
        self._check_input_path(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_input_path(self, state_dict, prefix: str) -> None:
        """Refuse, naming the cause, weights whose node 1 was built for the other input path
        (the two wirings give node 1 different shapes when the stage changes width)."""
        if self.stride == 1 and self.in_chs == self.out_chs:
            return  # both input paths build the same stage
        own = {k: v.shape for k, v in self.nodes[0].state_dict(prefix=prefix + 'nodes.0.').items()}
        theirs = {k: state_dict[k].shape for k in own if k in state_dict}
        if all(theirs[k] == own[k] for k in theirs):
            return
        other = 'projection' if self.input_path == 'node1' else 'node1'
        in_chs, stride = (self.out_chs, 1) if other == 'projection' else (self.in_chs, self.stride)
        with torch.device('meta'):
            node = create_node_op(self._node_op, in_chs, self.out_chs, stride, **self._node_kwargs)
        if all(theirs.get(prefix + 'nodes.0.' + k, v.shape) == v.shape for k, v in node.state_dict().items()):
            raise InputError(
                f'weights of a network built with input_path={other!r}', f'{prefix}nodes.0',
                f'this stage has input_path={self.input_path!r}; rebuild the model with input_path={other!r} '
                f'(node 1 and the input projection are wired differently, see backbones/dag.py)')

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
                f'input_path={self.input_path}, alpha_trainable={self.alpha_trainable}')


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    for i in range(min(a.shape[0], b.shape[0])):
        if a[i].tolist() != b[i].tolist():
            return f'#{i}: {tuple(a[i].tolist())} vs {tuple(b[i].tolist())}'
    return f'#{min(a.shape[0], b.shape[0])}: one graph has more edges'


def _flat_pair(a: torch.Tensor, b: torch.Tensor):
    """1-D views of two same-shape tensors with the same memory layout, or None."""
    if a.is_contiguous() and b.is_contiguous():
        return a.view(-1), b.view(-1)
    if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous(
            memory_format=torch.channels_last):
        return a.permute(0, 2, 3, 1).reshape(-1), b.permute(0, 2, 3, 1).reshape(-1)
    return None


class _WeightedSum(torch.autograd.Function):
    """``sum_k alpha[k] * xs[k]`` as one autograd node.

    Forward accumulates in place into one output (no per-edge temporaries); backward gives
    each input ``alpha[k] * grad`` and each weight the dot product ``<grad, xs[k]>`` without
    materialising ``grad * xs[k]``, which the per-edge ``addcmul`` backward does.
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        out = torch.mul(xs[0], alpha[0])
        for k in range(1, len(xs)):
            out.addcmul_(xs[k], alpha[k])
        ctx.save_for_backward(alpha, *xs)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        alpha, *xs = ctx.saved_tensors
        grads = [None] * (len(xs) + 1)
        if ctx.needs_input_grad[0]:
            grad_alpha = torch.empty_like(alpha)
            for k, x in enumerate(xs):
                pair = _flat_pair(grad, x)
                grad_alpha[k] = torch.dot(*pair) if pair is not None else (grad * x).sum()
            grads[0] = grad_alpha
        for k in range(len(xs)):
            if ctx.needs_input_grad[k + 1]:
                grads[k + 1] = grad * alpha[k]
        return tuple(grads)
