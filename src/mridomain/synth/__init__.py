"""mridomain.synth: Seq2Seq multi-sequence MRI synthesis (Han et al.).

One generator turns any available sequence into any missing one (Encoder, ConvLSTM, HyperDecoder
with HyperConv kernels chosen by the target's one-hot code); sequences are ranked by how hard they
are to generate (C_t, C_d, eq. 4) and each sequence gets a map of what no other sequence explains
(M_d, eq. 5). See docs/synth.md.

Commands and their Python twins::

    mridomain synth brain -o DIR --subjects N     mridomain.sim.brain.simulate_brains
    mridomain synth toy -o DIR                    run_toy_experiment
    mridomain synth train DATA -o RUN             train
    mridomain synth evaluate RUN                  evaluate
    mridomain synth contribution RUN              rank_sequences
    mridomain synth dmap RUN SUBJECT -o DIR       dmap
    mridomain synth generate RUN IN... --to SEQ   generate
    mridomain synth demo -o OUT                   run_demo
"""
from __future__ import annotations

from mridomain.lazy import lazy_exports

# Names resolve lazily (PEP 562) so that ``mridomain --help`` and the CLI do not import torch.
_EXPORTS: dict[str, str] = {
    "dmap": "apply", "generate": "apply", "parse_inputs": "apply",
    "BRATS_SEQUENCES": "config", "PRESETS": "config", "NetworkConfig": "config", "SynthConfig": "config",
    "make_config": "config",
    "adjacency": "contribution", "centrality": "contribution", "contribution_table": "contribution",
    "rank_sequences": "evaluation",
    "SynthData": "data", "Subject": "data", "load_dataset": "data", "load_subject": "data",
    "silence_mask": "data", "split_subjects": "data",
    "load_dce_dataset": "dce", "simulate_dce_dataset": "dce",
    "run_demo": "demo",
    "differentiation_map": "differentiation", "subject_dmaps": "differentiation",
    "evaluate": "evaluation", "image_metrics": "evaluation",
    "SynthRun": "model", "load_run": "model",
    "HyperConv": "network", "Seq2SeqGenerator": "network", "build_generator": "network",
    "profile_config": "network", "profile_generator": "network",
    "make_toy_dataset": "toy", "run_toy_experiment": "toy",
    "SynthTask": "training", "train": "training",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
