"""TopoNet backbones: stage graphs, DAG stages, node ops, TopoNet, sparsity, export.

Importing this package registers the TopoNet family in timm's model registry
(``timm.create_model('toponet_complete')``). mmengine integration lives in
``backbones.mmengine_optim`` (imported by configs through ``custom_imports``).
"""
__version__ = '0.1.0'

from .complexity import count_macs, count_parameters
from .dag import DAGStage
from .graphs import (GRAPH_KINDS, XIE_BEST_SETTINGS, GraphSpec, ba_graph, build_graph, complete_graph, er_graph,
                     random_graph, residual_graph, ws_graph)
from .ops import NODE_OPS, create_node_op
from .sparsity import SPARSITY_MODES, TopologySparsity, alpha_parameters, dag_stages, param_groups_alpha_no_decay
from .topology_export import (StageTopology, extract_topology, load_topology_json, load_topology_npz,
                              save_topology_json, save_topology_npz, topology_to_networkx)
from .toponet import TopoNet, TopoNetCfg, TopologyCfg, model_cfgs
from . import mobilenetv2_topo, resnet_cifar  # noqa: F401  (registers ResNet-CIFAR, MobileNetV2)

__all__ = [
    '__version__', 'GRAPH_KINDS', 'XIE_BEST_SETTINGS', 'GraphSpec', 'build_graph', 'complete_graph', 'residual_graph',
    'random_graph', 'er_graph', 'ba_graph', 'ws_graph', 'NODE_OPS', 'create_node_op', 'DAGStage',
    'SPARSITY_MODES', 'TopologySparsity', 'alpha_parameters', 'dag_stages', 'param_groups_alpha_no_decay',
    'StageTopology', 'extract_topology', 'save_topology_json', 'load_topology_json', 'save_topology_npz',
    'load_topology_npz', 'topology_to_networkx', 'TopoNet', 'TopoNetCfg', 'TopologyCfg', 'model_cfgs',
    'count_macs', 'count_parameters',
]
