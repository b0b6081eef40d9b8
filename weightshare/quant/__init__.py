"""nablaQDARTS: differentiable search of cell architecture and per-layer bit widths.

Modules, each one job (imports point down this list only):

    quantizers    HWGQ activation / std-scaled weight fake quantizers, straight-through
    ops           QConv (mixed-precision conv), the 8 PC-DARTS candidate ops
    genotype      NetSpec and Genotype (plain data, JSON)
    search_model  the PC-DARTS search network (partial channels, edge normalization)
    derived       the discrete network of a genotype at fixed bits
    cost          MACs (traced), the search's complexity loss, expected / exact BitOps
    config        QuantConfig + presets (configs/quant/{tiny,small,full}.yaml)
    search        bilevel search -> genotype.json
    retrain       QAT retraining from scratch -> retrain.pt, test accuracy, BitOps
    export        ONNX with QuantizeLinear/DequantizeLinear, checked with onnxruntime
"""

from .config import QuantConfig
from .cost import bitops, bitops_split, complexity_loss, conv_macs, expected_bitops
from .derived import DerivedNetwork
from .genotype import Genotype, GenotypeError, NetSpec, load_genotype, save_genotype
from .ops import PRIMITIVES, BitGammas, QConv
from .quantizers import SUPPORTED_BITS, quantize_act, quantize_weight
from .search_model import SearchNetwork

__all__ = [
    "PRIMITIVES",
    "SUPPORTED_BITS",
    "BitGammas",
    "DerivedNetwork",
    "Genotype",
    "GenotypeError",
    "NetSpec",
    "QConv",
    "QuantConfig",
    "SearchNetwork",
    "bitops",
    "bitops_split",
    "complexity_loss",
    "conv_macs",
    "expected_bitops",
    "load_genotype",
    "quantize_act",
    "quantize_weight",
    "save_genotype",
]
