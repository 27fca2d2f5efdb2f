"""`--mode compile`: the exact train step, sampler and FID eval step compiled for a TPU topology.

libtpu compiles for a topology without the hardware (on any host, CPU included): the mesh is
built over the topology's devices (all hosts of a pod slice), every input is a
ShapeDtypeStruct with its NamedSharding, and `jit(...).lower(...).compile()` runs the TPU
compiler. What it reports is compile-time analysis, not a measured speed:

- per-core HBM of each program (arguments, temporaries, outputs) against the core's capacity;
- FLOPs and bytes accessed per step (XLA's cost analysis of the compiled program, per core);
- the collectives in the compiled HLO (kind, count, bytes);
- a roofline floor per train step, max(FLOPs / peak, bytes / HBM bandwidth), and the images/s
  it implies at 100% and 30% of peak.

A train step that does not fit ends in one line (`DoesNotFitError`): the topology, how many
GiB over, and the largest global batch that fits (searched by compiling).
"""

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from importlib import metadata
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.experimental import topologies

from vitgan_jax import errors, sharding, tpu_env, tpu_specs, train
from vitgan_jax.evaluation import inception
from vitgan_jax.gan import GAN

INSTALL_HINT = ('libtpu is not installed, so nothing can be compiled for a TPU: '
                'pip install -e ".[tpu]" (jax[tpu] at the installed jax version)')
PEAK_FRACTION = 0.3  # the second images/s column: 30% of peak, a common sustained MFU
GIB = tpu_specs.GIB
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
               'collective-permute', 'collective-broadcast')
MAX_SEARCH_COMPILES = 10
CHECK_ABOVE = 1.25  # a search's answer stands once a batch this much larger was refused too


class DoesNotFitError(errors.ConfigError):
  """The train step needs more HBM per core than the topology's chips have."""


@dataclasses.dataclass
class ProgramReport:
  """What the TPU compiler says about one program, per core (one JAX device)."""
  name: str
  batch: int                      # global batch of the program
  compile_seconds: float
  argument_bytes: int
  temp_bytes: int
  output_bytes: int
  alias_bytes: int                # outputs that reuse argument buffers (the donated state)
  code_bytes: int
  flops: float
  bytes_accessed: float
  collectives: Dict[str, Tuple[int, int]]  # kind -> (count, bytes)

  @property
  def total_bytes(self) -> int:
    """Arguments + temporaries + outputs not aliased to arguments + the program itself."""
    return (self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes
            + self.code_bytes)


@dataclasses.dataclass
class Report:
  config_name: str
  topology: tpu_specs.Topology
  dtype: str
  batch: int
  programs: List[ProgramReport]
  libtpu_version: str

  def program(self, name) -> ProgramReport:
    return next(p for p in self.programs if p.name == name)

  @property
  def capacity_bytes(self) -> float:
    return self.topology.chip.hbm_bytes_per_device

  def floor_seconds(self, name='train step') -> Tuple[float, float, float]:
    """(floor, compute time, memory time) of one step of `name` at 100% of peak."""
    p, chip = self.program(name), self.topology.chip
    compute = p.flops / chip.peak_flops_per_device
    memory = p.bytes_accessed / chip.hbm_bandwidth_per_device
    return max(compute, memory), compute, memory

  def images_per_second(self, fraction=1.0) -> float:
    return self.batch * fraction / self.floor_seconds()[0]

  def to_dict(self) -> dict:
    floor, compute, memory = self.floor_seconds()
    return {
        'config': self.config_name, 'topology': self.topology.name,
        'libtpu_topology': self.topology.libtpu_name, 'devices': self.topology.num_devices,
        'dtype': self.dtype, 'global_batch': self.batch, 'libtpu': self.libtpu_version,
        'hbm_capacity_gib_per_core': self.capacity_bytes / GIB,
        'fits': all(p.total_bytes <= self.capacity_bytes for p in self.programs),
        'floor_ms': floor * 1e3, 'compute_ms': compute * 1e3, 'memory_ms': memory * 1e3,
        'images_per_s_at_peak': self.images_per_second(),
        f'images_per_s_at_{int(PEAK_FRACTION * 100)}pct': self.images_per_second(PEAK_FRACTION),
        'programs': [dict(dataclasses.asdict(p), total_bytes=p.total_bytes,
                          collectives={k: {'count': c, 'bytes': b}
                                       for k, (c, b) in p.collectives.items()})
                     for p in self.programs],
    }


# ----------------------------------------------------------------------------
# The topology and the programs.


def libtpu_version() -> str:
  try:
    return metadata.version('libtpu')
  except metadata.PackageNotFoundError:
    return 'unknown'


def resolve_topology(name: str) -> tpu_specs.Topology:
  try:
    return tpu_specs.topology(name)
  except ValueError as e:
    raise errors.ConfigError(f'--topology: {e}') from e


def topology_devices(topology: tpu_specs.Topology):
  """The topology's TPU devices (no hardware needed); ConfigError with INSTALL_HINT without libtpu."""
  if not tpu_env.libtpu_installed():
    raise errors.ConfigError(INSTALL_HINT)
  tpu_env.use_compile_only_env()
  kwargs = {}
  if topology.chip_config_name:
    kwargs['chip_config_name'] = topology.chip_config_name
  if topology.chips_per_host_bounds:
    kwargs['chips_per_host_bounds'] = topology.chips_per_host_bounds
  try:
    devices = topologies.get_topology_desc(platform='tpu', topology_name=topology.libtpu_name,
                                           **kwargs).devices
  except Exception as e:  # pylint: disable=broad-except  # libtpu's own errors (XlaRuntimeError)
    raise errors.ConfigError(f'libtpu refused topology {topology.libtpu_name} '
                             f'({" ".join(str(e).split())[:300]})') from e
  if len(devices) != topology.num_devices:
    raise errors.ConfigError(f'topology {topology.name} ({topology.libtpu_name}) has '
                             f'{len(devices)} devices, expected {topology.num_devices}')
  return devices


def cache_dir() -> str:
  """Where compile reports are kept: $VITGAN_CACHE/tpu_compile (default ~/.cache/vitgan_jax)."""
  root = os.environ.get('VITGAN_CACHE', os.path.expanduser('~/.cache/vitgan_jax'))
  return os.path.join(root, 'tpu_compile')


def eval_batch_size(config, num_devices: int) -> int:
  """The FID batch: eval.batch_size rounded up to a multiple of the devices, as training does."""
  return -(-config.eval.batch_size // num_devices) * num_devices


def programs(config, mesh, which=('train step', 'sampler', 'FID eval step')
             ) -> Dict[str, Tuple[Callable, tuple, int]]:
  """name -> (jitted function, abstract arguments, global batch) for each program to compile."""
  gan = GAN.from_config(config)
  state = gan.abstract_state(mesh)  # shapes only, placed as training restores into
  data, rep = sharding.data_sharded(mesh), sharding.replicated(mesh)
  out = {}
  batch = config.training.batch_size
  sharding.check_batch_size(batch, mesh)
  if 'train step' in which:
    try:
      step = train.make_train_step(config, gan, mesh)
    except (ValueError, KeyError) as e:
      raise errors.ConfigError(f'config: {e}') from e
    size, channels = config.model.image_size, config.model.channels
    images = jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32, sharding=data)
    out['train step'] = (train.jit_train_step(step, mesh,
                                              state_shardings=gan.state_shardings(mesh)),
                         (state, {'image': images}), batch)
  n = eval_batch_size(config, mesh.devices.size)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
  sample_images = gan.sampler(mesh)  # the jitted sampler evaluation and training use
  if 'sampler' in which:
    out['sampler'] = (sample_images, (state, rng, n), n)
  if 'FID eval step' in which:
    model = inception.InceptionV3(with_logits=True)
    params = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
        jax.eval_shape(inception.init_params, jax.random.key(0)))

    @jax.jit
    def fid_eval_step(state, rng, inception_params):
      """One FID batch as the evaluator runs it: EMA samples -> uint8 -> Inception features."""
      x = jax.lax.with_sharding_constraint(sample_images(state, rng, n), data)
      return jax.lax.with_sharding_constraint(
          model.apply({'params': inception_params}, x), rep)
    out['FID eval step'] = (fid_eval_step, (state, rng, params), n)
  return out


# ----------------------------------------------------------------------------
# What the compiler says.

_SHAPE = re.compile(r'\b(pred|s4|s8|s16|s32|s64|u4|u8|u16|u32|u64|f8e\w+|bf16|f16|f32|f64|c64|'
                    r'c128)\[([\d,]*)\]')
_BITS = {'pred': 8, 'c64': 64, 'c128': 128}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([a-z][\w\-]*)\(')


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    bits = _BITS[dtype] if dtype in _BITS else int(re.search(r'\d+', dtype).group())
    count = 1
    for d in filter(None, dims.split(',')):
      count *= int(d)
    total += count * bits // 8
  return total


def collectives_in_hlo(hlo_text: str) -> Dict[str, Tuple[int, int]]:
  """kind -> (count, bytes of their results) of the collective ops in compiled HLO text.

  Async pairs count once (at their -start, or -done for all-gather/reduce-scatter whose
  start also carries the operand); fused collectives (e.g. all-reduce inside a fusion's
  name) are found by the op name.
  """
  found: Dict[str, List[int]] = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    shape, opcode = match.groups()
    for kind in COLLECTIVES:
      if opcode == kind or opcode == kind + '-start':
        result = shape
        if opcode.endswith('-start') and kind in ('all-gather', 'all-reduce', 'reduce-scatter',
                                                  'collective-permute'):
          # (operands..., results...) tuples: the results are the second half
          parts = _SHAPE.findall(shape)
          half = len(parts) // 2 if len(parts) > 1 else 0
          result = ' '.join(f'{d}[{s}]' for d, s in parts[half:])
        count_bytes = found.setdefault(kind, [0, 0])
        count_bytes[0] += 1
        count_bytes[1] += _shape_bytes(result)
        break
  return {k: (c, b) for k, (c, b) in found.items()}


def _cost(compiled) -> Tuple[float, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return float(cost.get('flops', 0.0)), float(cost.get('bytes accessed', 0.0))


_OOM = re.compile(r'required for (.*?) \(([\d.]+)([KMGT]?)\) exceeds available HBM '
                  r'\(([\d.]+)([KMGT]?)\)')
# The other form libtpu uses: "... Exceeded hbm capacity by 11.78M. Total hbm usage >= 8.01G".
_OOM_EXCEEDED = re.compile(r'Exceeded hbm capacity by ([\d.]+)([KMGT]?)\b.*?'
                           r'Total hbm usage >= ([\d.]+)([KMGT]?)\b')
_UNIT = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def parse_out_of_memory(message: str) -> Optional[Tuple[float, float]]:
  """(required, available) bytes per core from libtpu's RESOURCE_EXHAUSTED message, or None."""
  match = _OOM.search(message)
  if match:
    _, req, req_unit, avail, avail_unit = match.groups()
    return float(req) * _UNIT[req_unit], float(avail) * _UNIT[avail_unit]
  match = _OOM_EXCEEDED.search(message)
  if match:
    over, over_unit, total, total_unit = match.groups()
    required = float(total) * _UNIT[total_unit]
    return required, required - float(over) * _UNIT[over_unit]
  return None


class OutOfMemory(Exception):
  """The TPU compiler refused a program for lack of HBM."""

  def __init__(self, message, required, available):
    super().__init__(message)
    self.required, self.available = required, available


def _cache_path(name: str, lowered, extra: str) -> str:
  """A report cache entry keyed by the lowered program (StableHLO), its devices and libtpu.

  JAX's persistent compilation cache cannot serve compiles for a topology: reading an entry
  back needs a TPU client ("PjRtCompiler must be constructed with a Client to call
  DeserializeLoadedExecutable"), so the compiler's answers are cached instead.
  """
  digest = hashlib.sha256()
  for part in (name, extra, libtpu_version(), jax.__version__, lowered.as_text()):
    digest.update(part.encode())
    digest.update(b'\0')
  stem = re.sub(r'\W+', '_', name)
  return os.path.join(cache_dir(), f'{stem}-{digest.hexdigest()[:24]}.json')


def compile_program(name: str, fn, args: tuple, batch: int, *, cache_key: str = '',
                    cache: bool = True) -> ProgramReport:
  """Lowers and compiles one program; OutOfMemory when the TPU compiler runs out of HBM.

  With `cache`, a program lowered to the same text for the same `cache_key` (the topology)
  and libtpu is answered from cache_dir() without compiling (compile_seconds: the original's).
  """
  lowered = fn.lower(*args)
  cache = cache and not os.environ.get('VITGAN_TPU_HLO_DIR')
  path = _cache_path(name, lowered, cache_key) if cache else None
  if path and os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if 'out_of_memory' in cached:
      message, required, available = cached['out_of_memory']
      if not math.isfinite(required):  # cached before its message form was parsed
        required, available = parse_out_of_memory(message) or (required, available)
      raise OutOfMemory(message, required, available)
    cached['collectives'] = {k: tuple(v) for k, v in cached['collectives'].items()}
    return ProgramReport(**cached)
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  # JaxRuntimeError from libtpu
    message = str(e)
    if 'RESOURCE_EXHAUSTED' not in message:
      raise
    required, available = parse_out_of_memory(message) or (float('nan'), float('nan'))
    error = OutOfMemory(' '.join(message.split())[:500], required, available)
    _write_json(path, {'out_of_memory': [str(error), required, available]})
    raise error from e
  seconds = time.perf_counter() - start
  if os.environ.get('VITGAN_TPU_HLO_DIR'):  # the compiled HLO, to see what the compiler made
    _write_text(os.path.join(os.environ['VITGAN_TPU_HLO_DIR'],
                             f'{re.sub(r"[^A-Za-z0-9]+", "_", name)}-{cache_key.split("/")[0]}'
                             f'-b{batch}.hlo.txt'), compiled.as_text())
  memory = compiled.memory_analysis()
  flops, bytes_accessed = _cost(compiled)
  report = ProgramReport(
      name=name, batch=batch, compile_seconds=seconds,
      argument_bytes=int(memory.argument_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
      code_bytes=int(memory.generated_code_size_in_bytes),
      flops=flops, bytes_accessed=bytes_accessed,
      collectives=collectives_in_hlo(compiled.as_text()))
  _write_json(path, dataclasses.asdict(report))
  return report


def _write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def _write_json(path: Optional[str], value) -> None:
  if not path:
    return
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
      json.dump(value, f)
    os.replace(tmp, path)
  except OSError:  # a read-only cache only costs the next run a compile
    pass


# ----------------------------------------------------------------------------
# Fit, search and the whole check.


def with_batch(config, batch: int):
  config = copy.deepcopy(config)
  with config.unlocked():
    config.training.batch_size = batch
  return config


def _topology_key(topology: tpu_specs.Topology) -> str:
  return f'{topology.libtpu_name}/{topology.chip_config_name}/{topology.chips_per_host_bounds}'


def train_step_over_bytes(config, mesh, topology: tpu_specs.Topology, cache: bool = True
                          ) -> Tuple[bool, float, Optional[ProgramReport]]:
  """(fits, bytes over the capacity per core (negative: room left), report) of the train step."""
  capacity = topology.chip.hbm_bytes_per_device
  fn, args, batch = programs(config, mesh, which=('train step',))['train step']
  try:
    report = compile_program('train step', fn, args, batch, cache_key=_topology_key(topology),
                             cache=cache)
  except OutOfMemory as e:
    return False, e.required - e.available, None
  over = report.total_bytes - capacity
  return over <= 0, over, report


def _next_multiple(b: int, step: int) -> int:
  """The smallest multiple of `step` above b."""
  return (b // step + 1) * step


def largest_fitting_batch(fits: Callable[[int], Tuple[bool, float]], step: int, known_fail: int,
                          fail_over: float, capacity: float,
                          max_compiles: int = MAX_SEARCH_COMPILES, known_fit: int = 0,
                          fit_over: Optional[float] = None) -> Tuple[int, bool]:
  """(largest multiple of `step` below known_fail for which fits(b) holds, exact?).

  Memory grows about linearly with the batch, so each probe is where the line between the
  largest known fit and the smallest known failure crosses the capacity, rounded down to
  `step`; when that is the known fit itself, the next multiple is probed to close the bracket.
  Near the capacity the compiler rematerializes, so memory goes flat and then jumps: when the
  same side moves twice running, the other side's excess is halved (Illinois regula falsi) so
  the probes do not creep along the flat part. 0 when not even `step` fits. `exact` is False
  when max_compiles ran out first (the result is then a batch that fits, maybe not the largest).
  """
  lo, lo_over = known_fit, -capacity if fit_over is None else fit_over
  # (batch 0 "needs nothing": a guess that only steers the first probe)
  hi, hi_over = known_fail, fail_over
  last_side = None
  for _ in range(max_compiles):
    if _next_multiple(lo, step) >= hi:
      return lo, True
    if math.isfinite(hi_over) and math.isfinite(lo_over):
      guess = lo + (hi - lo) * (-lo_over) / max(hi_over - lo_over, 1.0)
    else:  # a refusal that did not say by how much: bisect
      guess = (lo + hi) / 2
    guess = max(int(guess // step) * step, _next_multiple(lo, step))
    if guess >= hi:
      guess = max((lo + hi) // 2 // step * step, _next_multiple(lo, step))
    ok, over = fits(guess)
    if ok:
      lo, lo_over = guess, over
      hi_over = hi_over / 2 if last_side == 'lo' else hi_over
    else:
      hi, hi_over = guess, over
      lo_over = lo_over / 2 if last_side == 'hi' else lo_over
    last_side = 'lo' if ok else 'hi'
  return lo, _next_multiple(lo, step) >= hi


def search_largest(fits: Callable[[int], Tuple[bool, float]], step: int, start: int,
                   start_over: float, capacity: float, fixed_bytes: float = 0.0,
                   max_compiles: int = MAX_SEARCH_COMPILES) -> Tuple[int, bool]:
  """(largest multiple of `step` for which fits(b) holds, exact?), from batch `start` (compiled:
  start_over bytes over the capacity).

  Upward, each probe is where a line crosses the capacity: first the line from `fixed_bytes`
  at batch 0 (the state and program, which do not grow with the batch) through `start`, then
  the line through the last two fits (at most doubling). A linear memory model thus needs about
  two compiles past `start`: one at the crossing, one a step above it.
  """
  if start_over > 0:
    return largest_fitting_batch(fits, step, start, start_over, capacity, max_compiles)
  prev, prev_over = 0, fixed_bytes - capacity
  lo, lo_over = start, start_over
  for compiles in range(1, max_compiles + 1):
    slope = (lo_over - prev_over) / (lo - prev)
    target = lo + (-lo_over) / slope if slope > 0 else 2 * lo
    if prev:   # past the first line: memory that stops growing (rematerialization) can fool
      target = min(target, 2 * lo)   # the secant into a huge jump; at most double instead
    target = max(int(target // step) * step, _next_multiple(lo, step))
    ok, over = fits(target)
    if not ok:
      return largest_fitting_batch(fits, step, target, over, capacity, max_compiles - compiles,
                                   known_fit=lo, fit_over=lo_over)
    prev, prev_over, lo, lo_over = lo, lo_over, target, over
  return lo, False


def checked_above(found: int, refused: Sequence[int]) -> bool:
  """Whether a batch CHECK_ABOVE x found or larger is among the refused ones."""
  return any(b >= CHECK_ABOVE * found for b in refused)


def confirm_largest(fits: Callable[[int], Tuple[bool, float]], step: int, found: int,
                    exact: bool, capacity: float, refused: Sequence[int] = (),
                    max_compiles: int = MAX_SEARCH_COMPILES) -> Tuple[int, bool]:
  """(found, exact) of a search that took memory to grow with the batch, checked above.

  Near the capacity the compiler's plan changes with the batch, so a batch above a refused one
  can fit again (CelebA-64 float32 on v6e-8: 4864 refused by 0.15 GiB, 5824 fits with 8.93
  free). Unless a batch CHECK_ABOVE x found or larger was refused already (`refused`), one is
  compiled; when it fits, the search goes on upward from it. exact: the bracket closed and a
  batch CHECK_ABOVE x above the answer was refused.
  """
  counted, newly_refused, compiled = _noting_refusals(fits)
  while exact and not checked_above(found, [*refused, *newly_refused]):
    if len(compiled) >= max_compiles:
      return found, False
    check = _next_multiple(math.ceil(CHECK_ABOVE * found) - 1, step)
    ok, over = counted(check)
    if ok:
      found, exact = search_largest(counted, step, check, over, capacity,
                                    max_compiles=max(max_compiles - len(compiled), 0))
  return found, exact


def _checked_search(fits, search, step: int, capacity: float, refused: Sequence[int],
                    max_compiles: int) -> Tuple[int, bool]:
  """search(fits) -> (found, exact), then confirm_largest, the two on one compile budget;
  refused: batches known refused before the search."""
  noting, newly_refused, compiled = _noting_refusals(fits)
  found, exact = search(noting)
  return confirm_largest(noting, step, found, exact, capacity, [*refused, *newly_refused],
                         max(max_compiles - len(compiled), 0))


def _batch_fits(config, topology_name: str, cache: bool, say: Callable[[str], None],
                probes: Optional[List[Tuple[int, float]]]):
  """(fits(b) -> (fits?, bytes over the capacity per core, report), topology) for a search."""
  topology = resolve_topology(topology_name)
  mesh = sharding.create_mesh(topology_devices(topology))
  capacity = topology.chip.hbm_bytes_per_device

  def fits(b):
    ok, over, report = train_step_over_bytes(with_batch(config, b), mesh, topology, cache)
    say(f'  {topology.name} global batch {b}: {"fits" if ok else "does not fit"} '
        f'({over / GIB:+.2f} GiB against {capacity / GIB:.1f})')
    if probes is not None:
      probes.append((b, float(over)))
    return ok, over, report
  return fits, topology


def largest_batch(config, topology_name: str, cache: bool = True, per_core_step: int = 1,
                  say: Callable[[str], None] = lambda s: None,
                  probes: Optional[List[Tuple[int, float]]] = None,
                  max_compiles: int = MAX_SEARCH_COMPILES) -> Tuple[int, bool]:
  """(largest global batch whose train step fits the topology, exact?), searched by compiling.

  Global batches are multiples of per_core_step x the core count; see search_largest. Each
  compile's (global batch, bytes over the capacity per core) is appended to `probes`.
  """
  fits, topology = _batch_fits(config, topology_name, cache, say, probes)
  start = config.training.batch_size
  _, start_over, report = fits(start)
  fixed = report.argument_bytes + report.code_bytes if report is not None else 0.0
  step, capacity = topology.num_devices * per_core_step, topology.chip.hbm_bytes_per_device
  return _checked_search(
      fits, lambda f: search_largest(f, step, start, start_over, capacity, fixed, max_compiles),
      step, capacity, [start] if start_over > 0 else [], max_compiles)


def close_bracket(config, topology_name: str, known_fit: int, fit_over: float, known_fail: int,
                  fail_over: float, per_core_step: int = 1, cache: bool = True,
                  max_compiles: int = MAX_SEARCH_COMPILES,
                  say: Callable[[str], None] = lambda s: None,
                  probes: Optional[List[Tuple[int, float]]] = None,
                  refused_before: Sequence[int] = ()) -> Tuple[int, bool]:
  """largest_batch's search resumed between a batch known to fit and one known not to (the
  bytes over the capacity at each, from an earlier search that ran out of compiles or was not
  checked above: refused_before, the batches it saw refused), then checked above."""
  fits, topology = _batch_fits(config, topology_name, cache, say, probes)
  step, capacity = topology.num_devices * per_core_step, topology.chip.hbm_bytes_per_device
  return _checked_search(
      fits, lambda f: largest_fitting_batch(f, step, known_fail, fail_over, capacity,
                                            max_compiles, known_fit=known_fit, fit_over=fit_over),
      step, capacity, [known_fail, *refused_before], max_compiles)


def _noting_refusals(fits):
  """(fits(b) -> (fits?, over) that notes each batch, the refused ones, all it compiled)."""
  refused, compiled = [], []

  def noting(b):
    ok, over = fits(b)[:2]
    compiled.append(b)
    if not ok:
      refused.append(b)
    return ok, over
  return noting, refused, compiled


def check(config, topology_name: str, config_name: str = 'config',
          which=('train step', 'sampler', 'FID eval step'), search: bool = True,
          cache: bool = True, say: Callable[[str], None] = lambda s: None) -> Report:
  """Compiles `which` for the topology; DoesNotFitError (one line) when the train step does not fit."""
  topology = resolve_topology(topology_name)
  devices = topology_devices(topology)
  mesh = sharding.create_mesh(devices)
  capacity = topology.chip.hbm_bytes_per_device
  batch = config.training.batch_size
  reports = []
  for name, (fn, args, n) in programs(config, mesh, which).items():
    say(f'Compiling the {name} (global batch {n}) for {topology.name} ...')
    try:
      report = compile_program(name, fn, args, n, cache_key=_topology_key(topology),
                               cache=cache)
    except OutOfMemory as e:
      if name != 'train step':
        raise errors.ConfigError(f'{topology.name}: the {name} at batch {n} does not fit '
                                 f'({e})') from e
      _does_not_fit(config, mesh, topology, batch, e.required - e.available, search, cache,
                    say)
    if name == 'train step' and report.total_bytes > capacity:
      _does_not_fit(config, mesh, topology, batch, report.total_bytes - capacity, search, cache,
                    say)
    reports.append(report)
  return Report(config_name, topology, str(config.training.dtype), batch, reports,
                libtpu_version())


def _does_not_fit(config, mesh, topology, batch, over, search, cache, say):
  n = topology.num_devices
  capacity = topology.chip.hbm_bytes_per_device
  found = ''
  if search:
    say(f'The train step does not fit at global batch {batch}; searching the largest that '
        'fits ...')

    def fits(b):
      ok, b_over, _ = train_step_over_bytes(with_batch(config, b), mesh, topology, cache)
      say(f'  global batch {b}: {"fits" if ok else "does not fit"}')
      return ok, b_over
    largest, exact = largest_fitting_batch(fits, n, batch, over, capacity)
    found = (f'; the largest global batch that fits is {largest} '
             f'(--config.training.batch_size={largest})' if largest and exact else
             f'; global batch {largest} fits (search stopped after {MAX_SEARCH_COMPILES} '
             'compiles)' if largest else
             f'; not even global batch {n} (1 per core) fits')
  raise DoesNotFitError(
      f'does not fit: {topology.name} ({topology.chip.generation} core: '
      f'{_size(capacity)} HBM): the train step at global batch {batch} needs '
      f'{_size(over)} more per core{found}')


def _size(b: float) -> str:
  return f'{b / GIB:.2f} GiB' if abs(b) >= GIB / 10 else f'{b / 2 ** 20:.1f} MiB'


# ----------------------------------------------------------------------------
# The table.


def _gib(b: float) -> str:
  return f'{b / GIB:.3f}'


def _collectives(c: Dict[str, Tuple[int, int]]) -> str:
  if not c:
    return 'none'
  return ', '.join(f'{kind} x{count} ({size / 2 ** 20:.1f} MiB)'
                   for kind, (count, size) in sorted(c.items()))


def format_report(report: Report) -> str:
  """The table `--mode compile` prints."""
  t, chip = report.topology, report.topology.chip
  floor, compute, memory = report.floor_seconds()
  lines = [
      f'TPU compile check: {report.config_name} for {t.name} ({t.libtpu_name}: '
      f'{t.num_devices} x TPU {chip.generation} device, {t.num_chips} chips), mesh data='
      f'{t.num_devices}, global batch {report.batch} ({report.batch // t.num_devices} per '
      f'core), training.dtype={report.dtype}, libtpu {report.libtpu_version}.',
      'Compile-time analysis by the TPU compiler, per core; not a measured speed.',
      '',
      f'| program | batch | compile s | arguments GiB | temporaries GiB | outputs GiB | '
      f'total GiB / HBM {report.capacity_bytes / GIB:.1f} GiB | GFLOP | GB accessed | '
      'collectives (kind xcount, result bytes) |',
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  ]
  for p in report.programs:
    lines.append(
        f'| {p.name} | {p.batch} | {p.compile_seconds:.1f} | {_gib(p.argument_bytes)} | '
        f'{_gib(p.temp_bytes)} | {_gib(p.output_bytes)} | {_gib(p.total_bytes)} '
        f'({100 * p.total_bytes / report.capacity_bytes:.0f}%) | {p.flops / 1e9:.2f} | '
        f'{p.bytes_accessed / 1e9:.3f} | {_collectives(p.collectives)} |')
  bound = 'memory-bound' if memory > compute else 'compute-bound'
  lines += [
      '',
      f'Train step floor: {floor * 1e3:.3f} ms ({bound}: FLOPs / peak {compute * 1e3:.3f} ms at '
      f'{chip.peak_flops_per_device / 1e12:.1f} TFLOP/s per core, bytes / HBM bandwidth '
      f'{memory * 1e3:.3f} ms at {chip.hbm_bandwidth_per_device / 1e9:.0f} GB/s per core) -> '
      f'{report.images_per_second():,.0f} images/s at 100% of peak, '
      f'{report.images_per_second(PEAK_FRACTION):,.0f} at {PEAK_FRACTION:.0%}.',
      f'Specs: {chip.source}.',
  ]
  return '\n'.join(lines)
