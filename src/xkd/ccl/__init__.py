"""CCL (Chen et al., CVPR 2021): supervised video classification distilled from frozen audio and image teachers.

``xkd train-ccl --config configs/ccl/avdigits_cpu.yaml`` trains it; see ``docs/CCL.md``.
"""
