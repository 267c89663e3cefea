"""The release's EfficientNet reference cases (../shared/reference/efficientnet_*): which exist,
and the settings each was made with (its ``case.json``) as this project's config, so that
every test runs on every such case, whatever its type, widths or keep ratios."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import SHARED_REFERENCE

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'efficientnet_b2.py'  # the release's EfficientNet recipe; a case overrides its fields


def dataset_for(num_classes: int) -> str:
    """A registered RGB dataset with ``num_classes`` labels (only the class count matters to
    pruning and to the step on the case's own batch): cifar10, cifar100 or imagenet2012."""
    from spnet_jax.data import DATASETS

    names = sorted(n for n, spec in DATASETS.items()
                   if spec.num_classes == num_classes and spec.channels == 3)
    if not names:
        raise ValueError(f'no registered RGB dataset has {num_classes} classes (the config '
                         f'checks model.num_classes against data.name\'s)')
    return names[0]


def efficientnet_cases() -> list[str]:
    if not SHARED_REFERENCE.is_dir():
        return []
    return sorted(p.name for p in SHARED_REFERENCE.glob('efficientnet_*')
                  if (p / 'case.json').is_file())


def case_params():
    """One pytest param per EfficientNet case; one skipped param when there is none."""
    names = efficientnet_cases()
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason='needs the release EfficientNet reference cases (../shared/reference)'))]
    return [pytest.param(n, id=n) for n in names]


@dataclass(frozen=True)
class Case:
    folder: Path
    variant: str
    num_classes: int
    image_size: int
    base_widths: tuple[float, ...]
    keep_ratios: tuple[float, ...]
    full_width: float
    zpm: bool
    min_channels_ratio: float
    stochastic_depth: float

    @property
    def num_subnets(self) -> int:
        return len(self.keep_ratios) + 1

    def base_file(self, width: float) -> Path:
        return self.folder / f'base_{width}.npz'

    @property
    def bases(self) -> list[tuple[float, Path]]:
        return [(w, self.base_file(w)) for w in self.base_widths]

    def overrides(self) -> dict:
        """Config fields (dotted names) that make `CONFIG` this case's settings; dropout and
        mixup off, as the case was run (every ``nn.Dropout`` as the identity)."""
        return {'model.name': f'efficientnet_{self.variant}',
                'model.num_classes': self.num_classes,
                'model.full_width': self.full_width, 'model.dropout': 0.0,
                'model.stochastic_depth': self.stochastic_depth,
                'data.name': dataset_for(self.num_classes), 'data.image_size': self.image_size,
                'base.widths': self.base_widths, 'prune.keep_ratios': self.keep_ratios,
                'prune.zpm': 'release' if self.zpm else 'none',
                'prune.min_channels_ratio': self.min_channels_ratio,
                'base.mixup_alpha': 0.0, 'slim.mixup_alpha': 0.0}

    def flags(self) -> list[str]:
        """`overrides` as command-line flags."""
        text = lambda v: ','.join(map(str, v)) + ',' if isinstance(v, tuple) else str(v)
        return [f'--config.{k}={text(v)}' for k, v in self.overrides().items()]

    def config(self):
        """`CONFIG`'s ``get_config()`` with `overrides` applied."""
        import sys
        sys.path.insert(0, str(ROOT))
        from configs import efficientnet_b2

        config = efficientnet_b2.get_config()
        for key, value in self.overrides().items():
            section, field = key.split('.')
            config[section][field] = value
        return config


def read_case(name: str) -> Case:
    folder = SHARED_REFERENCE / name
    case = json.loads((folder / 'case.json').read_text())
    found = re.search(r'type (b\d)', case['architecture']) or re.search(r'_(b\d)', name)
    return Case(folder, found.group(1), int(case['num_classes']), int(case['input_size']),
                tuple(float(w) for w in case['base_widths']),
                tuple(float(r) for r in case['keep_ratios']), float(case['full_width']),
                bool(case['zpm']), float(case['min_channels_ratio']),
                float(case['stochastic_depth_prob']))
