import pytest
import torch

from backbones.dag import DAGStage
from backbones.graphs import GraphSpec, complete_graph, random_graph, residual_graph


def reference_forward(stage: DAGStage, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 written out literally: every node sums alpha_ji * x_j over its inputs."""
    graph, alpha = stage.graph, stage.edge_weights
    outputs = {0: x}
    for i in range(1, graph.num_nodes):
        terms = []
        for e, (src, dst) in enumerate(graph.edges):
            if dst != i:
                continue
            feat = outputs[src]
            if src == 0 and i != 1 and stage.input_proj is not None:
                feat = stage.input_proj(x)
            terms.append(alpha[e] * feat)
        total = torch.stack(terms).sum(0)
        outputs[i] = total if i == graph.num_nodes - 1 else stage.nodes[i - 1](total)
    return outputs[graph.num_nodes - 1]


@pytest.mark.parametrize('graph', [complete_graph(7), residual_graph(9, 2), random_graph(10, 0.5, seed=1)])
@pytest.mark.parametrize('node_op', ['sep', 'conv3x3', 'inverted_bottleneck'])
def test_forward_matches_eq1(graph, node_op):
    stage = DAGStage(graph, 6, 12, stride=2, node_op=node_op).eval()
    with torch.no_grad():
        stage.edge_weights.uniform_(-1.5, 1.5)
    x = torch.randn(2, 6, 16, 16)
    out = stage(x)
    assert out.shape == (2, 12, 8, 8)
    torch.testing.assert_close(out, reference_forward(stage, x), rtol=1e-5, atol=1e-5)


def test_alpha_scales_edges():
    # A single chain: the output is alpha_01 * alpha_12 * node(x) scaled linearly in alpha_12.
    stage = DAGStage(GraphSpec(3, ((0, 1), (1, 2))), 4, 4).eval()
    x = torch.randn(1, 4, 8, 8)
    base = stage(x)
    with torch.no_grad():
        stage.edge_weights[1] = 3.0
    torch.testing.assert_close(stage(x), 3.0 * base)


def test_aggregation_does_not_stack(monkeypatch):
    stage = DAGStage(complete_graph(14), 8, 16, stride=2)
    x = torch.randn(2, 8, 16, 16)

    def forbidden(*args, **kwargs):
        raise AssertionError('the DAG forward must not stack or concatenate node inputs')
    monkeypatch.setattr(torch, 'stack', forbidden)
    monkeypatch.setattr(torch, 'cat', forbidden)
    stage(x).sum().backward()


def test_every_parameter_gets_a_gradient():
    stage = DAGStage(complete_graph(8), 4, 8, stride=2)
    stage(torch.randn(2, 4, 16, 16)).square().mean().backward()
    for name, p in stage.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_alpha_is_fixed_at_one():
    stage = DAGStage(complete_graph(6), 4, 4, alpha_trainable=False)
    assert not stage.alpha_trainable and torch.equal(stage.edge_weights, torch.ones(15))
    stage(torch.randn(2, 4, 8, 8)).sum().backward()
    assert stage.edge_weights.grad is None
    assert 'edge_weights' in stage.state_dict()


def test_input_projection_only_where_needed():
    # complete: the stage input feeds nodes 2.. at the new shape -> one shared projection
    assert DAGStage(complete_graph(6), 4, 8, stride=2).input_proj is not None
    # same shape in and out: the stage input is used as it is
    assert DAGStage(complete_graph(6), 8, 8, stride=1).input_proj is None
    # a chain reads the stage input only at node 1, which carries the change itself
    chain = GraphSpec(5, ((0, 1), (1, 2), (2, 3), (3, 4)))
    assert DAGStage(chain, 4, 8, stride=2).input_proj is None


def test_first_node_carries_stride_and_channels():
    stage = DAGStage(complete_graph(6), 4, 8, stride=2)
    first = stage.nodes[0]
    assert first.conv_dw.stride == (2, 2) and first.conv_dw.in_channels == 4 and first.conv_pw.out_channels == 8
    for node in list(stage.nodes)[1:]:
        assert node.conv_dw.stride == (1, 1) and node.conv_dw.in_channels == 8


def test_alpha_matrix_layout():
    stage = DAGStage(complete_graph(4), 2, 2)
    with torch.no_grad():
        stage.edge_weights.copy_(torch.arange(1.0, 7.0))
    mat = stage.alpha_matrix()
    for e, (src, dst) in enumerate(stage.graph.edges):
        assert mat[dst, src] == e + 1
    assert torch.count_nonzero(torch.triu(mat)) == 0


def test_torchscript_matches_eager():
    stage = DAGStage(random_graph(9, 0.5, seed=4), 4, 8, stride=2).eval()
    scripted = torch.jit.script(stage)
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(scripted(x), stage(x))


def test_bad_arguments():
    with pytest.raises(TypeError, match='graph must be a GraphSpec'):
        DAGStage({'num_nodes': 3}, 4, 4)
    with pytest.raises(ValueError, match="unknown node op 'conv5x5'"):
        DAGStage(complete_graph(4), 4, 4, node_op='conv5x5')
    with pytest.raises(ValueError, match='stride must be an int >= 1, got 0'):
        DAGStage(complete_graph(4), 4, 4, stride=0)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_gradients_match_the_reference(memory_format):
    stage = DAGStage(random_graph(12, 0.6, seed=3), 6, 12, stride=2).to(memory_format=memory_format)
    with torch.no_grad():
        stage.edge_weights.uniform_(-1.5, 1.5)
    x = torch.randn(2, 6, 16, 16).to(memory_format=memory_format).requires_grad_(True)
    target = torch.randn(2, 12, 8, 8)
    (stage(x) * target).sum().backward()
    fast = {n: p.grad.clone() for n, p in stage.named_parameters()}
    fast_x = x.grad.clone()
    stage.zero_grad()
    x.grad = None
    (reference_forward(stage, x) * target).sum().backward()
    for n, p in stage.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)
    torch.testing.assert_close(fast_x, x.grad, rtol=1e-4, atol=1e-5)
