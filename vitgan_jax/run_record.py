"""The run record: workdir/config.json says what a workdir was trained with, and each resume.

Written when a run starts (main process), read on resume to name the config keys that changed
(harmless ones, like the number of steps, apart from those that alter training), and by
`vitgan_jax.load(workdir)` to rebuild the config without its module.
"""

import json
import os
import subprocess
from typing import Any, Dict, List, Optional, Tuple

import jax
from absl import logging
from etils import epath

from vitgan_jax import sharding

CONFIG_FILE = 'config.json'
# Config keys (or prefixes ending in '.') that change nothing a resumed run computes.
HARMLESS_CONFIG_KEYS = ('logging.', 'eval.', 'checkpoint.', 'training.num_steps',
                        'training.debug_poison_step')
_ABSENT = '<absent>'  # a key that one of two configs lacks


def flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}: nested dicts (a config) as dotted keys."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _git_revision() -> Optional[str]:
  try:
    out = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'],
                         cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
                         text=True, timeout=10, check=True)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def config_as_dict(config) -> Dict[str, Any]:
  """The config as JSON-able nested dicts (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def read(workdir: str) -> Optional[Dict[str, Any]]:
  """The workdir's config.json record, or None when it has none."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    logging.warning('Ignoring unreadable %s: %s', path, e)
    return None


def config_differences(saved: Optional[Dict[str, Any]], config) -> List[Tuple[str, Any, Any]]:
  """[(key, saved value, current value)] between a config.json record and `config`."""
  if not saved or 'config' not in saved:
    return []
  old, new = flatten(saved['config']), flatten(config_as_dict(config))
  return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in sorted(set(old) | set(new))
          if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def is_harmless(key: str) -> bool:
  return any(key == h or (h.endswith('.') and key.startswith(h)) for h in HARMLESS_CONFIG_KEYS)


def describe_differences(differences) -> str:
  """'training.num_steps 3 -> 6, ...' (a key absent on one side shows as <absent>)."""
  show = lambda v: v if v == _ABSENT else json.dumps(v)  # noqa: E731
  return ', '.join(f'{k} {show(old)} -> {show(new)}' for k, old, new in differences)


def write(workdir: str, config, resumed_at: Optional[int] = None, differences=()) -> None:
  """Writes config.json (main process): config, git revision, and each resume's changes."""
  if not sharding.is_main_process():
    return
  path = epath.Path(workdir) / CONFIG_FILE
  previous = read(workdir) or {}
  history = list(previous.get('resumes', []))
  if resumed_at is not None:
    history.append({'step': resumed_at, 'git_revision': _git_revision(),
                    'changed': {k: [old, new] for k, old, new in differences}})
  record = {'config': config_as_dict(config),
            'git_revision': previous.get('git_revision', _git_revision()),
            'jax_version': jax.__version__, 'process_count': jax.process_count(),
            'device_count': jax.device_count(), 'resumes': history}
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2, sort_keys=True))


def incompatible_message(workdir: str, step: int, differences, shape_mismatch: str) -> str:
  """One line: which config keys differ from the workdir's, and which arrays disagree."""
  model_keys = [d for d in differences if not is_harmless(d[0])]
  keys = (f'config keys that differ from its config.json: {describe_differences(model_keys)}'
          if model_keys else 'no config.json to compare with')
  return (f'--workdir {workdir} holds a checkpoint (step {step}) of a different model; '
          f'{keys}; arrays that differ: {shape_mismatch}. Use the original config or a new '
          f'--workdir; nothing was changed.')
