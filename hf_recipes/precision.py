"""bf16 where the machine runs it natively, fp32 elsewhere: decided once at start, printed and recorded.

On a CPU without bf16 instructions (AVX2: most laptops, AMD before Zen 4, Intel consumer chips) bf16 is emulated
and a bf16 matmul runs ~350x slower than fp32, so a recipe that always asked for bf16 took days there instead of
minutes. A recipe that leaves `bf16` unset gets the machine's answer; an explicit `bf16: true|false` still wins.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

logger = logging.getLogger("hf_recipes")

# Forces the CPU answer, for tests (the suite means the same on every CPU) and for a CPU torch misjudges.
FORCE_CPU_BF16_ENV = "HF_RECIPES_CPU_BF16"
X86_MACHINES = {"x86_64", "amd64", "i386", "i686"}


@dataclass(frozen=True)
class Precision:
    """The resolved choice and why, as printed at start and written to run_config.yaml."""

    bf16: bool
    native: bool  # the device runs bf16 matmuls in hardware
    device: str  # cpu, cuda or mps
    why: str  # "this CPU has no native bf16 (AVX2)"
    requested: bool | None  # what the recipe or command line said (None: nothing, the machine decides)

    def describe(self) -> str:
        """One line: 'bf16: off, this CPU has no native bf16 (AVX2); training in fp32'."""
        reason = self.why if self.requested is None else f"as the recipe asks ({self.why})"
        return (
            f"bf16: {'on' if self.bf16 else 'off'}, {reason}; training in {'bf16 autocast' if self.bf16 else 'fp32'}"
        )


def cpu_bf16_support() -> tuple[bool, str]:
    """(native, why) for this CPU, as torch will run it (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA lower it)."""
    forced = os.environ.get(FORCE_CPU_BF16_ENV, "").strip().lower()
    if forced in {"native", "emulated"}:
        native = forced == "native"
        return native, f"{FORCE_CPU_BF16_ENV}={forced} overrides the detection"
    import torch

    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", "SVE256", ...
    if platform.machine().lower() not in X86_MACHINES:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # Arm: the BF16 extension (Neoverse V1, Apple M2+)
            return True, f"this CPU runs bf16 natively ({platform.machine()})"
        return False, f"this CPU has no native bf16 ({platform.machine()}, {capability})"
    amx = torch.cpu._is_amx_tile_supported()
    hardware = amx or torch.cpu._is_avx512_bf16_supported()
    onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    lowered = not capability.startswith("AVX512") or not (onednn_isa == "ALL" or "AVX512" in onednn_isa)
    if hardware and not lowered:
        return True, f"this CPU runs bf16 natively ({'AMX' if amx else 'AVX512-BF16'})"
    if hardware:
        return False, f"native bf16 turned off ({capability}, ONEDNN_MAX_CPU_ISA={onednn_isa})"
    return False, f"this CPU has no native bf16 ({capability})"


def cuda_bf16_support() -> tuple[bool, str]:
    import torch

    name = torch.cuda.get_device_name()
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True, f"{name} runs bf16 natively"
    return False, f"{name} has no native bf16"


def resolve_bf16(requested: bool | None, device: str) -> Precision:
    """bf16 when asked, else when native; a warning when a recipe asks for bf16 that is emulated here."""
    native, why = cpu_bf16_support() if device == "cpu" else cuda_bf16_support() if device == "cuda" else mps_bf16()
    bf16 = native if requested is None else requested
    precision = Precision(bf16=bf16, native=native, device=device, why=why, requested=requested)
    if precision.bf16 and not native:
        logger.warning(
            "bf16 is on because the recipe asks for it, but %s: it is emulated, many times slower than fp32 "
            "(a bf16 matmul ran ~350x slower on an AVX2 CPU). "
            "Leave bf16 unset (or --bf16 false) to train in fp32.",
            why,
        )
    return precision


def mps_bf16() -> tuple[bool, str]:
    return False, "bf16 autocast on Apple GPUs is not measured here"


def training_device(training_args) -> str:
    """Where the Trainer will run: 'cpu' when asked (use_cpu) or when there is no accelerator, else 'cuda'/'mps'."""
    import torch

    if getattr(training_args, "use_cpu", False):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


class AutoPrecisionMixin:
    """For TrainingArguments subclasses: `bf16: None` (the default) becomes the machine's answer before the checks.

    The decision stays on the arguments as `.precision` (logged at start, written to run_config.yaml).
    """

    def __post_init__(self):
        if self.fp16 and self.bf16 is None:
            self.bf16 = False  # fp16 asked for: the machine's bf16 answer is not wanted
        self.precision = resolve_bf16(self.bf16, training_device(self))
        self.bf16 = self.precision.bf16
        if self.bf16 and self.precision.requested is None and self.precision.device == "cpu":
            # No accelerator to choose anyway: say so, as TrainingArguments wants before bf16 on a CPU.
            self.use_cpu = True
        super().__post_init__()
