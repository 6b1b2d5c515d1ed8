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
            # the projection feeds every edge out of the input, except (0, 1) in 'node1' mode
            if src == 0 and stage.input_proj is not None and (i != 1 or stage.input_path == 'projection'):
                feat = stage.input_proj(x)
            terms.append(alpha[e] * feat)
        total = torch.stack(terms).sum(0)
        outputs[i] = total if i == graph.num_nodes - 1 else stage.nodes[i - 1](total)
    return outputs[graph.num_nodes - 1]


INPUT_PATHS = ['node1', 'projection']


@pytest.mark.parametrize('graph', [complete_graph(7), residual_graph(9, 2), random_graph(10, 0.5, seed=1)])
@pytest.mark.parametrize('node_op', ['sep', 'conv3x3', 'inverted_bottleneck'])
@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_forward_matches_eq1(graph, node_op, input_path):
    stage = DAGStage(graph, 6, 12, stride=2, node_op=node_op, input_path=input_path).eval()
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
    assert DAGStage(complete_graph(6), 8, 8, stride=1, input_path='projection').input_proj is None
    # a chain reads the stage input only at node 1, which carries the change itself
    chain = GraphSpec(5, ((0, 1), (1, 2), (2, 3), (3, 4)))
    assert DAGStage(chain, 4, 8, stride=2).input_proj is None
    # ... unless node 1 reads the projection like every other node
    assert DAGStage(chain, 4, 8, stride=2, input_path='projection').input_proj is not None


def test_first_node_carries_stride_and_channels():
    stage = DAGStage(complete_graph(6), 4, 8, stride=2)
    assert stage.input_path == 'node1'  # the default of DAGStage (ResNet-CIFAR, MobileNetV2)
    first = stage.nodes[0]
    assert first.conv_dw.stride == (2, 2) and first.conv_dw.in_channels == 4 and first.conv_pw.out_channels == 8
    for node in list(stage.nodes)[1:]:
        assert node.conv_dw.stride == (1, 1) and node.conv_dw.in_channels == 8


def test_projection_carries_stride_and_channels_and_every_node_is_alike():
    stage = DAGStage(complete_graph(6), 4, 8, stride=2, input_path='projection')
    proj = stage.input_proj
    assert proj.conv_dw.stride == (2, 2) and proj.conv_dw.in_channels == 4 and proj.conv_pw.out_channels == 8
    for node in stage.nodes:
        assert node.conv_dw.stride == (1, 1) and node.conv_dw.in_channels == 8 and node.conv_pw.out_channels == 8


def _weights_without_alpha(stage):
    return {n: tuple(p.shape) for n, p in stage.named_parameters() if n != 'edge_weights'}


def test_projection_stage_ops_do_not_depend_on_the_graph():
    # Same node count, very different wirings (a chain reads the input only at node 1):
    # with the projection feeding every input edge, the weights are the same tensors.
    graphs = [complete_graph(8), residual_graph(8, 2), random_graph(8, 0.3, seed=2),
              GraphSpec(8, tuple((i, i + 1) for i in range(7)))]
    shapes = [_weights_without_alpha(DAGStage(g, 4, 8, stride=2, input_path='projection')) for g in graphs]
    assert all(s == shapes[0] for s in shapes[1:])
    # the node1 wiring differs by graph: the chain has no projection
    assert _weights_without_alpha(DAGStage(graphs[0], 4, 8, stride=2)) != _weights_without_alpha(
        DAGStage(graphs[3], 4, 8, stride=2))


@pytest.mark.parametrize('source, target', [('node1', 'projection'), ('projection', 'node1')])
def test_weights_of_the_other_input_path_are_refused(source, target):
    from backbones.errors import InputError
    weights = DAGStage(complete_graph(6), 4, 8, stride=2, input_path=source).state_dict()
    stage = DAGStage(complete_graph(6), 4, 8, stride=2, input_path=target)
    with pytest.raises(InputError, match=f"input_path='{source}'.*rebuild the model with input_path='{source}'"):
        stage.load_state_dict(weights)
    # a stage that keeps its shape is the same network in both modes
    same = DAGStage(complete_graph(6), 8, 8, input_path=source).state_dict()
    DAGStage(complete_graph(6), 8, 8, input_path=target).load_state_dict(same)


def test_alpha_matrix_layout():
    stage = DAGStage(complete_graph(4), 2, 2)
    with torch.no_grad():
        stage.edge_weights.copy_(torch.arange(1.0, 7.0))
    mat = stage.alpha_matrix()
    for e, (src, dst) in enumerate(stage.graph.edges):
        assert mat[dst, src] == e + 1
    assert torch.count_nonzero(torch.triu(mat)) == 0


@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_torchscript_matches_eager(input_path):
    stage = DAGStage(random_graph(9, 0.5, seed=4), 4, 8, stride=2, input_path=input_path).eval()
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
    with pytest.raises(ValueError, match="unknown input_path 'node2'"):
        DAGStage(complete_graph(4), 4, 4, input_path='node2')


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_gradients_match_the_reference(memory_format, input_path):
    stage = DAGStage(random_graph(12, 0.6, seed=3), 6, 12, stride=2, input_path=input_path)
    stage = stage.to(memory_format=memory_format)
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


def _outputs_and_grads(stage, x, aggregation):
    stage.aggregation = aggregation
    stage.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = stage(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in stage.named_parameters()}


@pytest.mark.parametrize('graph', [complete_graph(9), residual_graph(9, 2), random_graph(10, 0.5, seed=1)])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('alpha_trainable', [True, False])
@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_stacked_aggregation_equals_weighted_sum(graph, memory_format, alpha_trainable, input_path):
    # float64 so that the two summation orders agree to rounding; outputs and every gradient.
    stage = DAGStage(graph, 6, 10, stride=2, alpha_trainable=alpha_trainable, input_path=input_path).double()
    stage = stage.to(memory_format=memory_format)
    with torch.no_grad():
        stage.edge_weights.uniform_(-1.5, 1.5)
    x = torch.randn(2, 6, 12, 12, dtype=torch.float64).contiguous(memory_format=memory_format)
    ref_out, ref_x, ref_grads = _outputs_and_grads(stage, x, 'weighted_sum')
    out, grad_x, grads = _outputs_and_grads(stage, x, 'stacked')
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_x, ref_x, rtol=1e-10, atol=1e-10)
    for name, ref in ref_grads.items():
        if ref is None:
            assert grads[name] is None, name
        else:
            torch.testing.assert_close(grads[name], ref, rtol=1e-10, atol=1e-10, msg=name)
    with torch.no_grad():
        stage.aggregation = 'stacked'
        torch.testing.assert_close(stage(x), reference_forward(stage, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_stacked_aggregation_saves_no_node_outputs_for_backward(input_path):
    # Memory: 'weighted_sum' saves every aggregated input for its alpha gradients (one
    # node-output-sized tensor per edge); 'stacked' reads them from its buffer instead.
    graph = complete_graph(8)
    stage = DAGStage(graph, 4, 8, stride=2, input_path=input_path)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)

    def node_sized_saves(aggregation):
        stage.aggregation = aggregation
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            stage(x)
        return sum(1 for t in saved if t.shape == (2, 8, 8, 8))

    # every edge at the new shape: all but stage input -> node 1 in 'node1' mode, all with the projection
    aggregated_edges = graph.num_edges - (input_path == 'node1')
    assert node_sized_saves('stacked') <= node_sized_saves('weighted_sum') - aggregated_edges


def test_aggregation_setting():
    stage = DAGStage(complete_graph(5), 4, 4)
    assert stage.aggregation == 'auto'
    with pytest.raises(ValueError, match="unknown aggregation 'fused'"):
        stage.aggregation = 'fused'
    with pytest.raises(ValueError, match="unknown aggregation 'gemv'"):
        DAGStage(complete_graph(5), 4, 4, aggregation='gemv')


def test_stacked_aggregation_under_cpu_autocast():
    stage = DAGStage(complete_graph(6), 4, 8, stride=2, aggregation='stacked')
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = stage(x)
    out.float().sum().backward()
    assert stage.edge_weights.grad is not None and torch.isfinite(stage.edge_weights.grad).all()
    assert x.grad is not None


@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_stacked_backward_pulls_node_gradients_and_takes_alpha_gradient_in_one_gemm(input_path):
    # The stacked backward writes each node input's gradient once, pulls every node output's
    # gradient with one matrix-vector product, and forms all alpha gradients with one GEMM:
    # no per-edge kernels and no read-modify-write accumulation into a gradient buffer.
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            self.counts[name] = self.counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    graph = complete_graph(10)
    stage = DAGStage(graph, 4, 8, stride=2, aggregation='stacked', input_path=input_path)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = stage(x)
    with CountOps() as ops:
        out.square().sum().backward()
    published_rows_read = graph.num_nodes - 1  # rows 0..N-2 all feed later nodes in a complete DAG
    assert ops.counts.get('mm', 0) == 1
    assert ops.counts.get('mv', 0) == published_rows_read
    assert ops.counts.get('addr', 0) == 0 and ops.counts.get('addr_', 0) == 0
    assert stage.edge_weights.grad is not None and torch.count_nonzero(stage.edge_weights.grad) == graph.num_edges


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (the Triton row sum)')
@pytest.mark.parametrize('input_path', INPUT_PATHS)
def test_stacked_aggregation_on_cuda(input_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model('toponet_complete', num_classes=10, input_path=input_path).cuda().double()
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.uniform_(-1, 1)
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64, device='cuda').contiguous(memory_format=torch.channels_last)

    def run(aggregation):
        model.zero_grad()
        model.set_aggregation(aggregation)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_out, ref_grads = run('weighted_sum')
    out, grads = run('stacked')
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, rtol=1e-9, atol=1e-10, msg=name)


def test_weighted_row_sum_matches_explicit_sum():
    from backbones.aggregation import weighted_row_sum
    rows = torch.randn(5, 1000, dtype=torch.float64)
    coeffs = torch.randn(5, dtype=torch.float64)
    expected = sum(coeffs[r] * rows[r] for r in range(5))
    torch.testing.assert_close(weighted_row_sum(rows, coeffs), expected, rtol=1e-12, atol=1e-12)
    # a run of consecutive rows of a larger buffer, as a gather reads them
    torch.testing.assert_close(weighted_row_sum(rows[1:4], coeffs[1:4]),
                               sum(coeffs[r] * rows[r] for r in range(1, 4)), rtol=1e-12, atol=1e-12)


def test_stacked_layout_copies_its_indices_per_device_and_never_moves_them():
    # nn.DataParallel replicas share a stage's layout across devices: a copy per device,
    # never an in-place move that another replica would see.
    stage = DAGStage(complete_graph(6), 4, 8, stride=2)
    layout = stage._stacked_layout
    on_meta = layout.indices(torch.device('meta'))
    assert all(t.device.type == 'meta' for t in on_meta)
    assert all(t.device.type == 'cpu' for t in layout.indices(torch.device('cpu')))
    assert layout.indices(torch.device('meta')) is on_meta  # copied once
