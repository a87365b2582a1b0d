"""The shared training engine: one loop, one checkpoint format, one settings base for every model.

```python
from mridomain.engine import Engine, TrainSettings, TrainTask

class MyConfig(TrainSettings):      # pydantic: validated, extra fields refused
    lr: float = 1e-3

class MyTask(TrainTask):
    def build_modules(self): return {"model": net}
    def build_optimizers(self, modules): return {"adam": torch.optim.Adam(modules["model"].parameters())}
    def train_batches(self, epoch, rank, world_size): ...   # epoch_batches(...) of this rank
    def training_step(self, batch, ctx): ...; ctx.backward(loss); ctx.step("adam"); return {"loss": ...}
    def validate(self, ctx): return {"val_loss": ...}

Engine(MyConfig(epochs=10), "runs/x").fit(MyTask(...))            # resume=True continues
```
Launched with ``torchrun --nproc_per_node N`` the same call trains with DDP on N processes.
"""
from mridomain.engine.checkpoint import (dump_json, load_optimizer, load_weights, read_json, read_tensors, save_optimizer,
                                         save_weights, weights_file, write_folder_atomic, write_json_atomic)
from mridomain.engine.engine import (LAST, Engine, FitResult, StepContext, TrainTask, cpu_has_native_bf16,
                                     distributed_environment, epoch_batches, plot_learning_curve, resolve_device,
                                     training_precision)
from mridomain.engine.settings import Settings, TrainSettings, validated, validation_message

__all__ = ["Engine", "FitResult", "StepContext", "TrainTask", "TrainSettings", "Settings", "epoch_batches",
           "resolve_device", "distributed_environment", "training_precision", "cpu_has_native_bf16",
           "plot_learning_curve", "LAST", "save_weights",
           "load_weights", "read_tensors", "save_optimizer", "load_optimizer", "read_json",
           "write_json_atomic", "write_folder_atomic", "weights_file", "dump_json", "validated", "validation_message"]
