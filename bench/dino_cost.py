"""Where a DINO step's compute goes at the quick preset's size (ResNet-18 CIFAR stem at width 16, batch 128: 256
global crops of 32 px and 768 local crops of 14 px): the student backbone, the teacher's forward, and the head at
DINO's size (2,048 hidden, 256 bottleneck, 4,096 outputs) and at a quarter of it. CPU seconds on one thread, so the
figures do not depend on what else the machine runs (the augmentation and the optimiser are not included).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/dino_cost.py
"""
import time, torch
torch.set_num_threads(1)
from train.models import build_encoder
from train.models.heads import DINOHead
enc = build_encoder("resnet18-cifar-w16").to(memory_format=torch.channels_last)
head = DINOHead(128, 4096)
small = DINOHead(128, 1024, hidden=512, bottleneck=128)
g = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
l = torch.randn(768, 3, 14, 14).contiguous(memory_format=torch.channels_last)
def t(fn, n=2):
    fn(); s = time.process_time()
    for _ in range(n): fn()
    return (time.process_time() - s) / n
def backbone():
    out = torch.cat([enc(g), enc(l)]); out.sum().backward()
def teacher():
    with torch.no_grad(): enc(g)
f = torch.randn(1024, 128, requires_grad=True)
def h(m):
    def run():
        m(f).sum().backward()
        with torch.no_grad(): m(f[:256])
    return run
print(f"student backbone fwd+bwd (256 global + 768 local): {t(backbone):.2f} CPU-s")
print(f"teacher backbone fwd (256 global): {t(teacher):.2f} CPU-s")
print(f"head 2048/256/4096 fwd+bwd 1024 + teacher 256: {t(h(head)):.2f} CPU-s")
print(f"head 512/128/1024: {t(h(small)):.2f} CPU-s")
n = sum(p.numel() for p in head.parameters()); print("head params", n, "backbone params", sum(p.numel() for p in enc.parameters()))
