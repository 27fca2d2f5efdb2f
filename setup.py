"""vitgan_jax: ViTGAN and other transformer GANs in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name='vitgan_jax',
    version='0.1.0',
    description='Train and evaluate ViTGAN (Lee et al., ICLR 2022) and other transformer GANs '
                'in JAX/Flax on TPU, GPU and CPU.',
    packages=find_packages(include=['vitgan_jax', 'vitgan_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.10.2',
        'flax>=0.12.8',
        'optax>=0.2.8',
        'orbax-checkpoint>=0.12.8',
        'tensorflow-cpu>=2.21.0',
        'tensorflow-datasets>=4.9.10',
        'importlib_resources',  # tensorflow-datasets imports it; etils no longer pulls it in
        'ml-collections>=1.1.0',
        'clu>=0.0.12',
        'tensorboard',  # clu's metric writers import it; tensorflow-cpu does not pull it in
        'numpy',
        'scipy',
        'pillow',
        'matplotlib',  # progress plots (FID and D gap against images seen)
    ],
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'nbformat'],  # xdist: the suite on every core
        # libtpu (~700 MB): TPU VMs, and `vitgan-train --mode compile` (compiles for a TPU
        # topology on any host). Pinned to the jax version: libtpu is built against one jaxlib.
        'tpu': ['jax[tpu]==0.10.2'],
    },
    entry_points={
        'console_scripts': [
            'vitgan-train=vitgan_jax.main:run',
        ],
    },
)
