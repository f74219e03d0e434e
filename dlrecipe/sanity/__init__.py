"""`dlrecipe sanity`: steps 1 and 2 of the babysitting recipe, as checks with verdicts (lectures 002 and 003).

One module per check, each with NAME and `run(ctx) -> Check`: it reads the model at initialisation (never modified:
checks work on copies), the data and the recipe from a `Context` (base.py) and returns one row: check, status
(pass / warn / fail / skip), observed, expected, advice. runner.py holds the registry and `run_sanity`, which runs
them in order, writes the run folder (outputs.py) and returns a `SanityResult`:

  labels             a split with one class, classes only in val/test, labels outside [0, C), a continuous target
  unregistered       layers in a plain list/dict, tensors that are not parameters: never trained nor moved
  nan_forward        the first module whose output turns NaN/Inf, or the parameter whose gradient does
  logits             probabilities (softmax, sigmoid) or a clamp after the last layer where logits belong
  uses_input         outputs identical for every example, or with zero gradient on the input
  batch_independence example i's output depends on other examples (eval mode): where the batch gets mixed
  eval_deterministic two eval-mode passes differ (dropout forced on, noise in forward)
  gradient_flow      parameters no gradient reaches (detach, no_grad, unused layer); frozen ones (a warning)
  init_loss          loss at init against log C (regression: predicting the target mean), weight decay off
  gradient_check     central differences in float64 against backprop, a sample of parameters in every layer
  layer_health       per-layer activation mean/std, saturation, dead and identical units, gradient norms
  update_ratio       ||update|| / ||weights|| per layer after one step (about 1e-3 is healthy)
  input_independent  a short training on zeroed inputs must do worse than on the real inputs
  overfit_small      a small sample to ~100% training accuracy, regularisation off; diagnosis and LR retries

Not checks: preflight.py runs one forward pass and loss on a real batch before anything else (build_model calls it for
every command: a shape mismatch is one line naming the layer); first_batch.py draws batch.png, the first training
batch as the model receives it.

Every threshold is a named constant in its check's module, with the reason for its value; the lectures give none of
them except log C and the 6-layer 4096-unit experiment (LECTURES.md: Diagnostics).
"""
# ruff: noqa: F401, I001 (the public names, re-exported and grouped by check module)
from ..errors import UserError
from .base import INPUT_SCALE_WARN, OVERFIT_FLAT, Check, Context, SanityResult, check_copy, input_rms, not_already
from .batch_independence import check_batch_independence
from .eval_deterministic import check_eval_deterministic
from .gradient_flow import check_gradient_flow
from .labels import check_labels
from .logits import check_logits
from .nan_forward import check_nan_forward
from .preflight import first_forward, unregistered
from .unregistered import check_unregistered
from .uses_input import check_uses_input
from .gradient_check import (GRADCHECK_BATCH, GRADCHECK_EPS, GRADCHECK_FAIL, GRADCHECK_FLOOR, GRADCHECK_PROBES,
                             GRADCHECK_WARN, KINKED, check_gradients, gradient_check)
from .init_loss import (INIT_LOSS_BATCHES, INIT_LOSS_FAIL, INIT_LOSS_LOW, INIT_LOSS_WARN, check_init_loss,
                        expected_init_loss)
from .input_independent import INDEP_MIN_GAIN, INDEP_STEPS, INDEP_VAL_EXAMPLES, check_input_independent
from .layer_health import (ACT_STD_FAIL, ACTIVATIONS, COLLAPSE_FAIL, COLLAPSE_WARN, DEAD_FAIL, DEAD_WARN,
                           DUPLICATE_FAIL, EXPLODE_FAIL, EXPLODE_WARN, GRAD_RATIO_FAIL, GRAD_RATIO_WARN, LAYER_BATCH,
                           SATURATED_FAIL, SATURATED_WARN, SATURATION_SIGMOID, SATURATION_TANH, ZERO_BELOW,
                           check_layer_health, judge_layers, layer_health)
from .outputs import LAYER_COLUMNS, plot_layers, plot_overfit, write_outputs
from .overfit_small import (OVERFIT_BATCHES, OVERFIT_BOUNCE, OVERFIT_FLAT_STOP, OVERFIT_MAX_EXAMPLES,
                            OVERFIT_PASS_ACC, OVERFIT_REG_PASS, OVERFIT_REG_WARN, OVERFIT_RETRY_FACTORS, OVERFIT_STEPS,
                            OVERFIT_WARN_ACC, check_overfit_small, diagnose, overfit_attempt)
from .runner import CHECKS, REGISTRY, SANITY_CPU_THREADS, parse_only, run_sanity
from .update_ratio import UPDATE_RATIO_FAIL, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, check_update_ratio, update_ratios
