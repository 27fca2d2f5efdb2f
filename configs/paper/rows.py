"""Every row of the ViTGAN paper's tables: its config, the paper's number and where that number
comes from, and which rows are another row's run or config. The one source of these numbers:
the README's table is generated from ROWS (`python -m configs.paper.rows`), and
tests/test_configs.py checks that the two agree and that every configs/paper/*.py has its row.

An alias is explicit: `same_run_as` (the paper reports one run in two tables, so one number)
or `config_of` (a row whose config is another row's, the paper's number its own); the file of
either only re-exports that row's get_config.
"""

import dataclasses
from typing import Optional

NOT_FOUND = 'not found'  # the number is not in the paper text we have (PAPER.md Sec. 3)


@dataclasses.dataclass(frozen=True)
class Row:
  """One row: configs/paper/<config>.py, the table and row it reproduces, the paper's number."""
  config: str
  table: str                          # 'main comparison table, CIFAR-10 32x32, row "ViTGAN"'
  paper: Optional[str] = None         # 'FID 6.66, IS 9.30'; None: not found
  source: str = ''                    # where the number (or its absence) comes from
  same_run_as: Optional[str] = None   # an alias: the row whose run (and number) this is
  config_of: Optional[str] = None     # an alias: the row whose config this is


ROWS = (
    Row('ablation_d_full',
        ('discriminator ablation (CIFAR-10 32x32), row "ViTGAN\'s D: L2 attention, ISN, overlapping'
         ' patches"'),
        paper=None,
        source='the discriminator ablation exists only as an image, PAPER.md Sec. 3',
        config_of='main_cifar10_vitgan'),
    Row('ablation_d_no_isn',
        ('discriminator ablation (CIFAR-10 32x32), row "plain spectral norm instead of ISN (with '
         'R1, as every non-ISN D here)"'),
        paper=None,
        source='the discriminator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_d_no_l2_attention',
        ('discriminator ablation (CIFAR-10 32x32), row "dot-product attention instead of L2 '
         'attention"'),
        paper=None,
        source='the discriminator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_d_no_overlap',
        'discriminator ablation (CIFAR-10 32x32), row "non-overlapping patches (overlap 0)"',
        paper=None,
        source='the discriminator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_d_vanilla',
        ('discriminator ablation (CIFAR-10 32x32), row "vanilla ViT D: dot-product attention, '
         'plain SN, no overlap, R1 instead of ISN"'),
        paper=None,
        source='the discriminator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_g_a_linear',
        ('generator ablation (CIFAR-10 32x32), row "generator A, linear output": w added to every '
         'position embedding, LayerNorm; linear patch output'),
        paper=None,
        source='the generator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_g_b_linear',
        ('generator ablation (CIFAR-10 32x32), row "generator B, linear output": w prepended as a '
         'token, LayerNorm; linear patch output'),
        paper=None,
        source='the generator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('ablation_g_c_implicit',
        ('generator ablation (CIFAR-10 32x32), row "generator C, implicit output": self-modulated '
         'LayerNorm; implicit neural (Fourier features + modulated MLP) output: ViTGAN'),
        paper=None,
        source='the generator ablation exists only as an image, PAPER.md Sec. 3',
        config_of='main_cifar10_vitgan'),
    Row('ablation_g_c_linear',
        ('generator ablation (CIFAR-10 32x32), row "generator C, linear output": self-modulated '
         'LayerNorm; linear patch output'),
        paper=None,
        source='the generator ablation exists only as an image, PAPER.md Sec. 3'),
    Row('main_celeba64_stylegan2',
        'main comparison table, CelebA 64x64, row "StyleGAN2"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('main_celeba64_vanilla_vit',
        ('main comparison table, CelebA 64x64, row "Vanilla-ViT" (ViT G and D without ViTGAN\'s '
         'techniques)'),
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('main_celeba64_vitgan',
        'main comparison table, CelebA 64x64, row "ViTGAN"',
        paper='FID 3.74',
        source='secondary: wiz, "19k samples"; LadaGAN README'),
    Row('main_cifar10_stylegan2',
        'main comparison table, CIFAR-10 32x32, row "StyleGAN2"',
        paper=None,
        source=("not in the ViTGAN paper text; LadaGAN's README lists StyleGAN2 at FID 5.79 on "
                'CIFAR-10, origin not given')),
    Row('main_cifar10_transgan',
        'main comparison table, CIFAR-10 32x32, row "TransGAN"',
        paper=None,
        source=('not in the ViTGAN paper text; third-party tables that cite ViTGAN list TransGAN '
                "at FID 9.26 / IS 9.05; TransGAN's own NeurIPS abstract says IS 9.02, FID 9.26")),
    Row('main_cifar10_vanilla_vit',
        ('main comparison table, CIFAR-10 32x32, row "Vanilla-ViT" (ViT G and D without ViTGAN\'s '
         'techniques)'),
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('main_cifar10_vitgan',
        'main comparison table, CIFAR-10 32x32, row "ViTGAN"',
        paper='FID 6.66, IS 9.30',
        source="secondary: PwC; the Consistency Models paper's table"),
    Row('main_lsun_bedroom64_stylegan2',
        'main comparison table, LSUN bedroom 64x64, row "StyleGAN2"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('main_lsun_bedroom64_vanilla_vit',
        ('main comparison table, LSUN bedroom 64x64, row "Vanilla-ViT" (ViT G and D without '
         "ViTGAN's techniques)"),
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('main_lsun_bedroom64_vitgan',
        'main comparison table, LSUN bedroom 64x64, row "ViTGAN"',
        paper=None,
        source='wiz lists FID 1.49 for an unlabeled ViTGAN variant'),
    Row('mixed_celeba64_stylegan2_g_stylegan2_d',
        'mixed G x D table, CelebA 64x64, row "StyleGAN2-G x StyleGAN2-D"',
        same_run_as='main_celeba64_stylegan2'),
    Row('mixed_celeba64_stylegan2_g_vitgan_d',
        'mixed G x D table, CelebA 64x64, row "StyleGAN2-G x ViTGAN-D"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('mixed_celeba64_vitgan_g_stylegan2_d',
        'mixed G x D table, CelebA 64x64, row "ViTGAN-G x StyleGAN2-D"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('mixed_celeba64_vitgan_g_vitgan_d',
        'mixed G x D table, CelebA 64x64, row "ViTGAN-G x ViTGAN-D"',
        same_run_as='main_celeba64_vitgan'),
    Row('mixed_cifar10_stylegan2_g_stylegan2_d',
        'mixed G x D table, CIFAR-10 32x32, row "StyleGAN2-G x StyleGAN2-D"',
        same_run_as='main_cifar10_stylegan2'),
    Row('mixed_cifar10_stylegan2_g_vitgan_d',
        'mixed G x D table, CIFAR-10 32x32, row "StyleGAN2-G x ViTGAN-D"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('mixed_cifar10_vitgan_g_stylegan2_d',
        'mixed G x D table, CIFAR-10 32x32, row "ViTGAN-G x StyleGAN2-D"',
        paper='FID 4.57, IS 9.89',
        source='secondary: PwC "ViTGAN with StyleGAN2"; LadaGAN README 4.57'),
    Row('mixed_cifar10_vitgan_g_vitgan_d',
        'mixed G x D table, CIFAR-10 32x32, row "ViTGAN-G x ViTGAN-D"',
        same_run_as='main_cifar10_vitgan'),
    Row('mixed_lsun_bedroom64_stylegan2_g_stylegan2_d',
        'mixed G x D table, LSUN bedroom 64x64, row "StyleGAN2-G x StyleGAN2-D"',
        same_run_as='main_lsun_bedroom64_stylegan2'),
    Row('mixed_lsun_bedroom64_stylegan2_g_vitgan_d',
        'mixed G x D table, LSUN bedroom 64x64, row "StyleGAN2-G x ViTGAN-D"',
        paper=None,
        source='PAPER.md Sec. 3'),
    Row('mixed_lsun_bedroom64_vitgan_g_stylegan2_d',
        'mixed G x D table, LSUN bedroom 64x64, row "ViTGAN-G x StyleGAN2-D"',
        paper=None,
        source='wiz lists FID 1.49 for an unlabeled ViTGAN variant, possibly this one'),
    Row('mixed_lsun_bedroom64_vitgan_g_vitgan_d',
        'mixed G x D table, LSUN bedroom 64x64, row "ViTGAN-G x ViTGAN-D"',
        same_run_as='main_lsun_bedroom64_vitgan'),
)
BY_CONFIG = {row.config: row for row in ROWS}


def paper_number(row: Row) -> str:
  """The paper column: the number, 'not found', or the number of the run this row shares."""
  if row.same_run_as:
    target = BY_CONFIG[row.same_run_as]
    return target.paper or f'see {target.config}'
  return row.paper or NOT_FOUND


def alias_note(row: Row) -> str:
  if row.same_run_as:
    return f' (same run as {row.same_run_as})'
  if row.config_of:
    return f' (the config of {row.config_of})'
  return ''


def markdown() -> str:
  """The README's table of paper rows ("ours": FID-50k of a full run; none run yet)."""
  lines = ['| `configs/paper/…` | table, row | paper (PAPER.md) | source of the number | ours |',
           '|---|---|---|---|---|']
  for row in ROWS:
    source = BY_CONFIG[row.same_run_as].source if row.same_run_as else row.source
    lines.append(f'| `{row.config}` | {row.table}{alias_note(row)} | {paper_number(row)} | '
                 f'{source or "–"} | – |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown())
