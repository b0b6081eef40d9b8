"""Elastic layers: weights sized for the largest SubNet, sliced per call.

Every forward takes the choice it runs (width, kernel) as an argument or reads it
off the input's shape; no module remembers which SubNet ran last. `extract`
methods copy the slice a choice uses into an ordinary torch layer.

Conventions shared with extraction, reordering and the FastSwitch footprint code:
a narrower choice uses the *first* channels; a smaller kernel uses the *centre*
of the largest kernel passed through learned per-layer transforms (OFA).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

__all__ = [
    "make_divisible",
    "ACTIVATIONS",
    "NormContext",
    "StatsRecorder",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticLinear",
    "ElasticBatchNorm2d",
]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never below 90% of `v` (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# Activations by name (blocks are described by data, not class choice): the module
# and the function of each, registered together so the two cannot disagree.
ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
_ACT_FNS: Registry[Callable[[Tensor], Tensor]] = Registry("activation")
for _name, _module, _fn in (("relu", nn.ReLU, F.relu), ("hswish", nn.Hardswish, F.hardswish),
                            ("hsigmoid", nn.Hardsigmoid, F.hardsigmoid),
                            ("identity", nn.Identity, lambda x: x)):
    ACTIVATIONS.add(_name, _module)
    _ACT_FNS.add(_name, _fn)


def act_fn(name: str) -> Callable[[Tensor], Tensor]:
    return _ACT_FNS.get(name)


# ---------------------------------------------------------------------- norms
class StatsRecorder:
    """Accumulates exact per-layer batch statistics over many calibration batches.

    Used by BN recalibration: every ElasticBatchNorm2d seen in a forward adds its
    batch mean and (biased) variance weighted by the number of values, so the
    result is the statistic over the whole calibration set.
    """

    def __init__(self) -> None:
        self._sums: dict[str, list] = {}

    def add(self, key: str, mean: Tensor, var: Tensor, count: int) -> None:
        entry = self._sums.get(key)
        # Keep sum of means and of second moments, so the pooled variance is exact.
        m2 = var + mean * mean
        if entry is None:
            self._sums[key] = [mean.detach() * count, m2.detach() * count, count]
        else:
            entry[0] = entry[0] + mean.detach() * count
            entry[1] = entry[1] + m2.detach() * count
            entry[2] += count

    def result(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for key, (sm, sm2, n) in self._sums.items():
            mean = sm / n
            var = (sm2 / n - mean * mean).clamp_min(0.0)
            out[key] = (mean, var)
        return out


@dataclass(frozen=True)
class NormContext:
    """How the batch norms of one forward behave; passed down with the SubNet.

    stats: that SubNet's own running statistics by layer key (SubnetNorm), used
        in eval mode instead of the shared running statistics.
    recorder: when set, norms normalise with batch statistics and record them
        (BN recalibration), and do not touch the shared running buffers.
    """

    stats: Mapping[str, tuple[Tensor, Tensor]] | None = None
    recorder: StatsRecorder | None = field(default=None, compare=False)


DEFAULT_NORM = NormContext()


def _distributed() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


class ElasticBatchNorm2d(nn.Module):
    """BatchNorm over the first `C` channels of its input, with per-SubNet statistics.

    `key` names the layer inside its SuperNet (set once by the SuperNet after
    construction); a SubNet's own statistics are looked up by it.
    """

    def __init__(self, max_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.max_features = max_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(max_features))
        self.bias = nn.Parameter(torch.zeros(max_features))
        self.register_buffer("running_mean", torch.zeros(max_features))
        self.register_buffer("running_var", torch.ones(max_features))
        self.key = ""

    def _stats(self, c: int, norm: NormContext) -> tuple[Tensor, Tensor]:
        if norm.stats is not None:
            own = norm.stats.get(self.key)
            if own is not None:
                return own
        return self.running_mean[:c], self.running_var[:c]

    def forward(self, x: Tensor, norm: NormContext = DEFAULT_NORM) -> Tensor:
        c = x.shape[1]
        w, b = self.weight[:c], self.bias[:c]
        if norm.recorder is not None:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            norm.recorder.add(self.key, mean, var, x.numel() // c)
            return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        if self.training:
            if _distributed():
                return self._sync_forward(x, w, b)
            # Slices of the 1-D buffers are views, so the momentum update lands in
            # the shared buffers (first channels), as OFA's DynamicBatchNorm2d.
            return F.batch_norm(
                x, self.running_mean[:c], self.running_var[:c], w, b, True, self.momentum, self.eps
            )
        mean, var = self._stats(c, norm)
        return F.batch_norm(x, mean, var, w, b, False, 0.0, self.eps)

    def _sync_forward(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """Batch statistics over all ranks (SyncBN), so N ranks compute what 1 process would."""
        import warnings

        # The public differentiable all_reduce is marked deprecated in favour of a private
        # module; keep the public one and its warning out of users' logs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce as _all_reduce

        def all_reduce(t: Tensor) -> Tensor:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _all_reduce(t)

        c = x.shape[1]
        n_local = x.numel() // c
        # Chan's parallel variance: per-rank centred moments, then combined. E[x^2] - mean^2
        # in float32 loses digits to cancellation and made 2 ranks drift from 1 process.
        local_mean = x.mean(dim=(0, 2, 3))
        local_var = x.var(dim=(0, 2, 3), unbiased=False)
        world = torch.distributed.get_world_size()
        n = float(n_local * world)  # Loader shards are equal-sized across ranks
        mean = all_reduce(local_mean * (n_local / n))  # differentiable collectives
        var = all_reduce((local_var + (local_mean - mean) ** 2) * (n_local / n))
        with torch.no_grad():
            m = self.momentum
            self.running_mean[:c].mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var[:c].mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        scale = w * torch.rsqrt(var + self.eps)
        return x * scale[None, :, None, None] + (b - mean * scale)[None, :, None, None]

    @torch.no_grad()
    def extract(self, c: int, norm: NormContext = DEFAULT_NORM) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        mean, var = self._stats(c, norm)
        bn.weight.copy_(self.weight[:c])
        bn.bias.copy_(self.bias[:c])
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        return bn


# ---------------------------------------------------------------------- convs
class ElasticConv2d(nn.Module):
    """Dense conv with elastic input width (from the input) and output width (argument)."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None

    def forward(self, x: Tensor, out_channels: int | None = None) -> Tensor:
        out = out_channels or self.max_out
        w = self.weight[:out, : x.shape[1]]
        b = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, self.kernel_size // 2)

    @torch.no_grad()
    def extract(self, in_channels: int, out_channels: int | None = None) -> nn.Conv2d:
        out = out_channels or self.max_out
        conv = nn.Conv2d(in_channels, out, self.kernel_size, self.stride, self.kernel_size // 2,
                         bias=self.bias is not None)
        conv.weight.copy_(self.weight[:out, :in_channels])
        if self.bias is not None:
            conv.bias.copy_(self.bias[:out])
        return conv


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic channels (from the input) and elastic kernel size.

    A kernel k smaller than the largest is the centre k x k of the next larger
    kernel times a learned (k*k, k*k) matrix, chained from the largest down
    (7 -> 5 -> 3), initialised to identity: OFA's kernel transformation. With
    ``transform=False`` it is the plain centre k x k of the largest kernel, as the
    DepS authors' code trains DepS and BigNAS (``--dy_conv_scaling_mode -1``).
    """

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int = 1,
                 transform: bool = True) -> None:
        super().__init__()
        self.max_channels = max_channels
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.transform = transform
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict()
        if transform:
            for big, small in zip(self.kernel_choices[::-1], self.kernel_choices[-2::-1],
                                  strict=False):
                self.transforms[f"{big}to{small}"] = nn.Parameter(torch.eye(small * small))

    def kernel_weight(self, channels: int, kernel: int) -> Tensor:
        w = self.weight[:channels]
        if not self.transform:
            if kernel not in self.kernel_choices:
                raise ValueError(f"kernel {kernel} not in {list(self.kernel_choices)}")
            start = (self.max_kernel - kernel) // 2
            return w[:, :, start : start + kernel, start : start + kernel]
        for big, small in zip(self.kernel_choices[::-1], self.kernel_choices[-2::-1], strict=False):
            if big == kernel:
                break
            start = (big - small) // 2
            centre = w[:, :, start : start + small, start : start + small]
            flat = centre.reshape(-1, small * small)
            w = F.linear(flat, self.transforms[f"{big}to{small}"]).view(channels, 1, small, small)
        if w.shape[-1] != kernel:
            raise ValueError(f"kernel {kernel} not in {list(self.kernel_choices)}")
        return w

    def forward(self, x: Tensor, kernel: int | None = None) -> Tensor:
        c = x.shape[1]
        k = kernel or self.max_kernel
        return F.conv2d(x, self.kernel_weight(c, k), None, self.stride, k // 2, 1, c)

    @torch.no_grad()
    def extract(self, channels: int, kernel: int | None = None) -> nn.Conv2d:
        k = kernel or self.max_kernel
        conv = nn.Conv2d(channels, channels, k, self.stride, k // 2, groups=channels, bias=False)
        conv.weight.copy_(self.kernel_weight(channels, k))
        return conv


class ElasticLinear(nn.Module):
    """Linear layer with elastic input (from the input) and output features (argument)."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True) -> None:
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.normal_(self.weight, 0, 0.01)

    def forward(self, x: Tensor, out_features: int | None = None) -> Tensor:
        out = out_features or self.max_out
        b = self.bias[:out] if self.bias is not None else None
        return F.linear(x, self.weight[:out, : x.shape[-1]], b)

    @torch.no_grad()
    def extract(self, in_features: int, out_features: int | None = None) -> nn.Linear:
        out = out_features or self.max_out
        lin = nn.Linear(in_features, out, bias=self.bias is not None)
        lin.weight.copy_(self.weight[:out, :in_features])
        if self.bias is not None:
            lin.bias.copy_(self.bias[:out])
        return lin
