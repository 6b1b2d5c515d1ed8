"""A hook for the DDP test: every rank writes a digest of its parameters after training
(BN running statistics are per rank under DDP and are left out)."""
import hashlib
import json
import os

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankDigestHook(Hook):
    def after_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        digest = hashlib.sha256()
        for name, tensor in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        path = os.path.join(runner.work_dir, f'digest_rank{get_rank()}.json')
        with open(path, 'w') as f:
            json.dump({'rank': get_rank(), 'world_size': get_world_size(), 'sha256': digest.hexdigest(),
                       'iter': runner.iter}, f)
