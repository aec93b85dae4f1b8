"""The paper's own numbers (DeepVigor+, Sections V-A to V-D), copied from its tables.

These are the only numbers typed by hand in the validation: they are the paper's, shown beside
ours in REPORT.md and always labelled "paper". Percentages as printed in the paper; counts and
seconds as printed. Models: VGG-11 (CIFAR-10), VGG-16, ResNet-18-C and MobileNetV2 (CIFAR-100),
on an NVIDIA A100 GPU with a 64-core AMD EPYC 7742.
"""

from __future__ import annotations

__all__ = ["MODELS", "TABLE3_MAE_PCT", "TABLE4_PCT", "TABLE5", "TABLE6", "TIMES_S", "MVF_PCT"]

#: Our model label -> the paper's name of the corresponding model.
MODELS = {
    "VGG-11": "VGG-11",
    "VGG-16": "VGG-16",
    "ResNet-18": "ResNet-18-C",
    "MobileNetV2": "MobileNetV2",
}

#: Table III: MAE of CVF (%), complete filters analysis vs weight FI on 15% of the channels.
TABLE3_MAE_PCT = {"VGG-11": 0.819, "VGG-16": 0.938, "ResNet-18": 0.933, "MobileNetV2": 0.874}

#: Table IV (%): (target, ratio) -> (MAE CVF, max CVF, MAE LVF, max LVF), 50 repeats.
TABLE4_PCT: dict[str, dict[tuple[str, float], tuple[float, float, float, float]]] = {
    "VGG-11": {
        ("activations", 0.05): (0.0004, 0.011, 0.0010, 0.012),
        ("activations", 0.10): (0.0004, 0.008, 0.0008, 0.008),
        ("activations", 0.15): (0.0004, 0.004, 0.0007, 0.007),
        ("activations", 0.20): (0.0004, 0.006, 0.0007, 0.007),
        ("weights", 0.05): (0.064, 0.171, 0.019, 0.125),
        ("weights", 0.10): (0.064, 0.148, 0.015, 0.097),
        ("weights", 0.15): (0.063, 0.130, 0.011, 0.083),
        ("weights", 0.20): (0.063, 0.128, 0.008, 0.076),
    },
    "VGG-16": {
        ("activations", 0.05): (0.037, 0.141, 0.033, 0.250),
        ("activations", 0.10): (0.038, 0.144, 0.022, 0.188),
        ("activations", 0.15): (0.038, 0.118, 0.018, 0.168),
        ("activations", 0.20): (0.038, 0.130, 0.015, 0.140),
        ("weights", 0.05): (0.045, 0.216, 0.017, 0.183),
        ("weights", 0.10): (0.044, 0.116, 0.010, 0.094),
        ("weights", 0.15): (0.043, 0.137, 0.008, 0.064),
        ("weights", 0.20): (0.043, 0.141, 0.007, 0.065),
    },
    "ResNet-18": {
        ("activations", 0.05): (0.029, 0.097, 0.054, 0.633),
        ("activations", 0.10): (0.029, 0.092, 0.038, 0.386),
        ("activations", 0.15): (0.029, 0.093, 0.031, 0.272),
        ("activations", 0.20): (0.029, 0.071, 0.026, 0.300),
        ("weights", 0.05): (0.045, 0.153, 0.016, 0.137),
        ("weights", 0.10): (0.045, 0.123, 0.011, 0.076),
        ("weights", 0.15): (0.045, 0.127, 0.010, 0.083),
        ("weights", 0.20): (0.045, 0.124, 0.008, 0.085),
    },
    "MobileNetV2": {
        ("activations", 0.05): (0.031, 1.443, 0.079, 2.803),
        ("activations", 0.10): (0.033, 0.841, 0.053, 1.252),
        ("activations", 0.15): (0.032, 0.586, 0.044, 0.742),
        ("activations", 0.20): (0.032, 0.465, 0.037, 0.720),
        ("weights", 0.05): (0.030, 0.893, 0.013, 0.983),
        ("weights", 0.10): (0.030, 0.401, 0.009, 0.372),
        ("weights", 0.15): (0.030, 0.468, 0.007, 0.346),
        ("weights", 0.20): (0.030, 0.401, 0.006, 0.320),
    },
}

#: Table V: target -> (exhaustive FI simulations, complete DeepVigor+ simulations).
TABLE5 = {
    "VGG-11": {"activations": (7_438_336, 1_636_414), "weights": (294_967_296, 11_035)},
    "VGG-16": {"activations": (5_931_008, 2_018_447), "weights": (470_734_848, 13_704)},
    "ResNet-18": {"activations": (21_331_968, 3_387_189), "weights": (357_095_424, 15_906)},
    "MobileNetV2": {"activations": (27_330_048, 3_029_125), "weights": (74_176_512, 42_234)},
}

#: Table VI: target -> (layer-wise, data-unaware, data-aware SFI, sampled DeepVigor+ 10%).
TABLE6 = {
    "VGG-11": {
        "activations": (74_863, 1_562_657, 71_173, 4_596),
        "weights": (75_351, 2_141_913, 66_934, 1_038),
    },
    "VGG-16": {
        "activations": (117_992, 1_839_889, 106_513, 10_283),
        "weights": (123_266, 3_588_834, 112_151, 1_476),
    },
    "ResNet-18": {
        "activations": (188_644, 4_264_406, 181_911, 15_996),
        "weights": (189_772, 5_253_096, 164_159, 1_706),
    },
    "MobileNetV2": {
        "activations": (493_871, 8_402_977, 452_650, 22_077),
        "weights": (475_407, 8_307_671, 259_614, 4_364),
    },
}

#: Tables VII (activations) and VIII (filters): seconds for 5/10/15/20% and complete, A100.
TIMES_S = {
    "VGG-11": {"activations": (203, 415, 625, 838, 66_083), "weights": (57, 111, 170, 219, 23_031)},
    "VGG-16": {"activations": (223, 453, 676, 915, 43_326), "weights": (61, 125, 168, 245, 35_634)},
    "ResNet-18": {
        "activations": (284, 580, 876, 1_171, 94_939),
        "weights": (92, 184, 275, 367, 60_410),
    },
    "MobileNetV2": {
        "activations": (1_037, 2_097, 3_153, 4_071, 211_868),
        "weights": (257, 513, 759, 1_025, 39_713),
    },
}

#: Fig. 9 / Sec. V-D: the two total MVFs the text states (%).
MVF_PCT = {"VGG-16": 1.19, "MobileNetV2": 2.76}
