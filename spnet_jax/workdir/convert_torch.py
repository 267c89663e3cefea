"""The original release's PyTorch checkpoints -> our variable trees.

The release saves ``torch.save({'model': state_dict, ...})``. Names map as follows (``b`` is
the release's ``features.<b>`` index, in network order):

* ResNet: ``features.0.{0,1}`` stem conv/BN; ``features.b.body.{0,1,3,4,6,7}`` the block's
  convs/BNs in order (conv1, bn1, conv2, bn2, conv3, bn3); ``features.b.shortcut.{0,1}``
  the projection; ``classifier.0`` the head.
* VGG: ``features.<i>`` convs in order -> ``conv0..conv15``, the BN at ``<i>+1``.
* MobileNetV2: ``features.0.{0,1}`` stem; ``features.b.body.*`` as ``expand``, ``dw``,
  ``project`` (``dw``, ``project`` when the expansion is 1); ``features.18.{0,1}`` last conv.
* MobileNetV1: ``features.0.{0,1}`` stem; ``features.b.body.{0,1,3,4}`` dw conv/BN and
  pointwise conv/BN. (Not checked against a release file: none is in the reference set.)
* EfficientNet: as MobileNetV2, with the squeeze-and-excitation between the depthwise conv
  and the projection: ``features.b.body.{0,1}`` expand, ``.{3,4}`` dw, ``.6.fc1`` / ``.6.fc2``
  the SE's reducing / expanding FCs (1x1 convs with bias), ``.{7,8}`` project (without
  expansion: ``.{0,1}`` dw, ``.3.fc1/.fc2``, ``.{4,5}`` project); ``classifier.1`` the head
  (``classifier.0`` is its dropout).

Conv kernels go from OIHW to HWIO, the classifier from (out, in) to (in, out). BN weight/bias
become scale/bias; ``running_mean``/``running_var`` become the full network's statistics
(``mean_{K-1}``), ``bn.<k>.running_*`` the private ones of sub-network k. An S-Net's
switchable BN (``<bn>.bn.<k>.{weight,bias,running_mean,running_var}`` for every width k, the
last included) becomes sub-network k's private ``scale_k``, ``bias_k``, ``mean_k``, ``var_k``.
``torch`` is needed only to read ``.pt`` files; ``.npz`` files with the same keys need numpy
alone. `release_shapes` goes the other way for shapes: the keys and shapes a release
checkpoint of a given network has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from spnet_jax.core import layers
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import efficientnet, mobilenet_v1, mobilenet_v2, resnet, vgg

# What a release checkpoint file holds, for the sentences that refuse another file.
RELEASE_FILE = ("the release's torch.save({'model': state_dict}) file (.pt/.pth) or an .npz "
                'of the same keys')


def read_state_dict(path: str, *, name: str | None = None,
                    expected: str = RELEASE_FILE) -> dict[str, np.ndarray]:
    """A release checkpoint (``.pt``/``.pth``, or ``.npz`` of the same keys) as numpy arrays.

    A file that is empty, damaged, or holds something else than a state dict (a list, a
    tensor, a whole ``nn.Module``, a dict without a ``'model'`` entry) is refused with one
    `ConfigError` sentence: ``name`` (default: the path), what is wrong, and ``expected``,
    what the file should hold. ``torch`` is imported only for a ``.pt`` file.
    """
    name = name or path

    def refused(problem: str) -> ConfigError:
        return ConfigError(f'{name} {problem}; give {expected}.')

    if os.path.isdir(path):
        raise refused('is a folder')
    if os.path.getsize(path) == 0:
        raise refused('is empty (0 bytes)')
    state = _read_npz(path, refused) if path.endswith('.npz') else _read_torch(path, name,
                                                                               refused)
    if not state:
        raise refused('holds no weights')
    return state


def _failure(e: BaseException) -> str:
    """An exception as a short parenthesis: its type and the first sentence of its message."""
    first = (str(e).strip().splitlines() or [''])[0].split('. ')[0][:160].rstrip('.')
    return f'{type(e).__name__}: {first}' if first else type(e).__name__


def _read_npz(path: str, refused) -> dict[str, np.ndarray]:
    try:
        f = np.load(path)
    except Exception as e:  # noqa: BLE001 - zip, pickle and format errors alike
        raise refused(f'is not a readable .npz of a state dict ({_failure(e)})') from None
    if not isinstance(f, np.lib.npyio.NpzFile):  # a lone .npy array under an .npz name
        raise refused(f'is not an .npz of a state dict: it holds one array of shape '
                      f'{np.shape(f)}, not named arrays')
    with f:
        try:  # members are read here: a truncated or altered archive fails now
            return {k: f[k] for k in f.files}
        except Exception as e:  # noqa: BLE001 - zip, zlib and format errors alike
            raise refused(f'is not a readable .npz of a state dict ({_failure(e)})') from None


def _describe(value) -> str:
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f'a tensor of shape {tuple(value.shape)}'
    if isinstance(value, (list, tuple)):
        return f'a {type(value).__name__} of {len(value)} item(s)'
    return f'a {type(value).__module__}.{type(value).__name__}'


def _read_torch(path: str, name: str, refused) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConfigError(f'{name} is a PyTorch file, and reading it needs PyTorch: pip install '
                          'torch (only this import uses it), or give an .npz of its state '
                          'dict.') from None
    try:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise refused(f'is not a readable PyTorch checkpoint ({_failure(e)})') from None
    state, where = obj, ''
    if isinstance(obj, Mapping):
        entry = next((k for k in ('model', 'state_dict') if k in obj), None)
        if entry is not None:
            state, where = obj[entry], f"a dict whose '{entry}' entry is "
        elif not any(isinstance(v, torch.Tensor) for v in obj.values()):
            keys = sorted(map(str, obj))
            raise refused(f"holds a dict without a 'model' entry (its keys: {keys[:6]}"
                          f'{", ..." if len(keys) > 6 else ""})')
    if isinstance(state, torch.nn.Module):
        raise refused(f'holds {where}a whole {type(state).__name__} module, not its state dict '
                      "(save torch.save({'model': model.state_dict()}, path) instead)")
    if not isinstance(state, Mapping):
        raise refused(f'holds {where}{_describe(state)}, not a state dict')
    return {str(k).removeprefix('module.'): v.detach().cpu().numpy()
            for k, v in state.items() if isinstance(v, torch.Tensor)}


def module_names(arch) -> dict[str, str]:
    """Release module name -> our module path, for ``arch``."""
    names = {'classifier.0': 'head'}
    if arch.name.startswith('resnet'):
        _, blocks = resnet.block_specs(arch.depth, 1.0)
        if arch.deep_stem:  # one Sequential of (conv, bn, relu) x 3, as the plain stem's
            for i, part in enumerate(('stem1', 'stem2', 'stem')):
                names[f'features.0.{3 * i}'] = f'{part}_conv'
                names[f'features.0.{3 * i + 1}'] = f'{part}_bn'
        else:
            names.update({'features.0.0': 'stem_conv', 'features.0.1': 'stem_bn'})
        for b, spec in enumerate(blocks, start=1):
            n = 3 if spec.bottleneck else 2
            for i in range(n):
                names[f'features.{b}.body.{3 * i}'] = f'{spec.name}/conv{i + 1}'
                names[f'features.{b}.body.{3 * i + 1}'] = f'{spec.name}/bn{i + 1}'
            # ResNet-D's strided shortcut starts with its average pool (no weights).
            at = 1 if arch.avg_down and spec.stride > 1 else 0
            names[f'features.{b}.shortcut.{at}'] = f'{spec.name}/proj_conv'
            names[f'features.{b}.shortcut.{at + 1}'] = f'{spec.name}/proj_bn'
    elif arch.name == 'vgg19':
        index, conv = 0, 0
        for c in vgg.VGG19:
            if c == 'M':
                index += 1
                continue
            names[f'features.{index}'] = f'conv{conv}'
            names[f'features.{index + 1}'] = f'bn{conv}'
            index, conv = index + 3, conv + 1
    elif arch.name == 'mobilenet_v2':
        _, specs, _ = mobilenet_v2.block_specs(1.0)
        names.update({'features.0.0': 'stem_conv', 'features.0.1': 'stem_bn',
                      f'features.{len(specs) + 1}.0': 'last_conv',
                      f'features.{len(specs) + 1}.1': 'last_bn'})
        for b in specs:
            parts = ['expand', 'dw', 'project'] if b.expand else ['dw', 'project']
            for i, part in enumerate(parts):
                names[f'features.{b.index}.body.{3 * i}'] = f'{b.name}/{part}_conv'
                names[f'features.{b.index}.body.{3 * i + 1}'] = f'{b.name}/{part}_bn'
    elif isinstance(arch, efficientnet.EfficientNetArch):
        _, specs, _ = arch.block_specs(arch.full_width)
        names = {'classifier.1': 'head', 'features.0.0': 'stem_conv', 'features.0.1': 'stem_bn',
                 f'features.{len(specs) + 1}.0': 'last_conv',
                 f'features.{len(specs) + 1}.1': 'last_bn'}
        for b in specs:
            # Each conv is followed by its BN and an activation (3 modules); the SE is one.
            parts = (['expand'] if b.expand else []) + ['dw', 'se', 'project']
            at = 0
            for part in parts:
                body = f'features.{b.index}.body.{at}'
                if part == 'se':
                    names[f'{body}.fc1'] = f'{b.name}/se_reduce'
                    names[f'{body}.fc2'] = f'{b.name}/se_expand'
                    at += 1
                else:
                    names[body] = f'{b.name}/{part}_conv'
                    names[f'features.{b.index}.body.{at + 1}'] = f'{b.name}/{part}_bn'
                    at += 3
    elif arch.name == 'mobilenet_v1':
        names.update({'features.0.0': 'stem_conv', 'features.0.1': 'stem_bn'})
        for b in range(1, len(mobilenet_v1.BLOCKS) + 1):
            for i, part in enumerate(['dw', 'pw']):
                names[f'features.{b}.body.{3 * i}'] = f'block{b}/{part}_conv'
                names[f'features.{b}.body.{3 * i + 1}'] = f'block{b}/{part}_bn'
    else:
        raise ConfigError(
            f'no release checkpoint layout is known for {arch.name}: its module names in the '
            'release were not available to this project; map its state dict onto this '
            'model\'s parameter names yourself, or train it here.')
    return names


def one_by_one_fcs(arch) -> set[str]:
    """Our FC modules the release writes as 1x1 convs ``(out, in, 1, 1)``: the layers of
    derived channel groups (EfficientNet's squeeze-and-excitation)."""
    table = arch.table()
    return {p for g in table.derived for p in (*g.producers, *(c for c, _ in g.consumers))}


_PRIVATE = re.compile(
    r'^(?P<mod>.+)\.bn\.(?P<k>\d+)\.(?P<leaf>weight|bias|running_mean|running_var)$')
# A BN entry of the release -> ours: (collection, the kind of variable).
_BN_LEAF = {'weight': ('params', layers.SCALE), 'bias': ('params', layers.BIAS),
            'running_mean': (layers.BATCH_STATS, layers.MEAN),
            'running_var': (layers.BATCH_STATS, layers.VAR)}
# Ours -> the release's: the kind of a BN variable -> its entry's name.
_RELEASE_LEAF = {kind: leaf for leaf, (_, kind) in _BN_LEAF.items()}


def convert(state: dict[str, np.ndarray], arch, num_subnets: int = 1) -> dict:
    """A release state dict -> ``{'params', 'batch_stats'}`` of ``arch`` (our names/layouts).

    ``num_subnets``: how many sub-networks the checkpoint's BNs hold statistics for (1 for
    a base network); the shared ``running_*`` belong to the last. (An S-Net's switchable BNs
    name every width's entries ``bn.<k>``, so it needs no ``num_subnets``.)
    """
    names = module_names(arch)
    fcs = one_by_one_fcs(arch) | {'head'}
    params, stats = {}, {}
    last = num_subnets - 1
    for key, value in state.items():
        value = np.asarray(value)
        mod, _, leaf = key.rpartition('.')
        if leaf == 'num_batches_tracked':
            continue
        m = _PRIVATE.match(key)
        if m:
            if m['mod'] not in names:
                raise ConfigError(f'checkpoint key {key!r} is not part of {arch.name}.')
            collection, kind = _BN_LEAF[m['leaf']]
            (params if collection == 'params' else stats)[
                f"{names[m['mod']]}/{layers.subnet_variable(kind, int(m['k']))}"] = value
            continue
        if mod not in names:
            raise ConfigError(f'checkpoint key {key!r} is not part of {arch.name}; is it a '
                              f'{arch.name} checkpoint?')
        path = names[mod]
        if leaf == 'weight' and path in fcs:  # (out, in) or a 1x1 conv's (out, in, 1, 1)
            params[f'{path}/kernel'] = value.reshape(value.shape[0], -1).T
        elif leaf == 'bias' and path in fcs:
            params[f'{path}/bias'] = value
        elif leaf == 'weight' and value.ndim == 4:
            params[f'{path}/kernel'] = value.transpose(2, 3, 1, 0)
        elif leaf in ('weight', 'bias'):  # a BN's shared affine
            params[f'{path}/{_BN_LEAF[leaf][1]}'] = value
        elif leaf in ('running_mean', 'running_var'):
            stats[f'{path}/{layers.subnet_variable(_BN_LEAF[leaf][1], last)}'] = value
        else:
            raise ConfigError(f'checkpoint key {key!r} has an unknown entry {leaf!r}.')
    as_f32 = lambda d: {k: np.asarray(v, np.float32) for k, v in d.items()}
    return {'params': traverse_util.unflatten_dict(as_f32(params), sep='/'),
            layers.BATCH_STATS: traverse_util.unflatten_dict(as_f32(stats), sep='/')}


def release_shapes(arch, shapes: dict, num_subnets: int = 1, *,
                   method: str = 'spnet') -> dict[str, tuple[int, ...]]:
    """The release checkpoint keys of a network of ``arch``, with their shapes in the
    release's layouts, from our variables' (or `jax.eval_shape`'s) ``{'params',
    'batch_stats'}``: the inverse of `convert` for shapes (``num_batches_tracked`` left out).

    ``method``: 'spnet' (a shared BN affine; ``running_*`` are sub-network
    ``num_subnets-1``'s statistics, ``bn.<k>.running_*`` the others') or 'snet' (every
    width's BN entries under ``bn.<k>``).
    """
    release = {ours: theirs for theirs, ours in module_names(arch).items()}
    one_by_one = one_by_one_fcs(arch)
    flat = lambda tree: traverse_util.flatten_dict(dict(tree or {}), sep='/')
    out: dict[str, tuple[int, ...]] = {}
    for path, x in flat(shapes.get('params')).items():
        mod, _, leaf = path.rpartition('/')
        shape, name = tuple(np.shape(x)), release[mod]
        if leaf == 'kernel' and len(shape) == 4:
            out[f'{name}.weight'] = (shape[3], shape[2], shape[0], shape[1])
        elif leaf == 'kernel':
            out[f'{name}.weight'] = shape[::-1] + ((1, 1) if mod in one_by_one else ())
        elif leaf in (layers.SCALE, layers.BIAS):  # a BN's shared affine (or the head's bias)
            out[f'{name}.{_RELEASE_LEAF[leaf]}'] = shape
        else:  # a switchable BN's private affine
            kind, k = _private(path)
            out[f'{name}.bn.{k}.{_RELEASE_LEAF[kind]}'] = shape
    for path, x in flat(shapes.get(layers.BATCH_STATS)).items():
        kind, k = _private(path)
        name = release[path.rpartition('/')[0]]
        if method == 'spnet' and k == num_subnets - 1:
            out[f'{name}.{_RELEASE_LEAF[kind]}'] = tuple(np.shape(x))
        else:
            out[f'{name}.bn.{k}.{_RELEASE_LEAF[kind]}'] = tuple(np.shape(x))
    return out


def _private(path: str) -> tuple[str, int]:
    """``(kind, k)`` of the per-sub-network variable at ``path`` ('/'-joined)."""
    parsed = layers.subnet_of(path.rpartition('/')[2])
    if parsed is None:
        raise ValueError(f'{path} is not a per-sub-network variable of a BatchNorm.')
    return parsed
