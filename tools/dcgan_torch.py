"""The DCGAN of models/zoo/gan.h in PyTorch, for the side-by-side tools (bench_gan_vs_torch.py,
gan_quality_vs_torch.py): the same shapes at 28 x 28 (one channel; width w: G ConvT
nz->2w 7x7, BN, ReLU, ConvT 2w->w 4/2/1, BN, ReLU, ConvT w->1 4/2/1, Tanh; D Conv 1->w
4/2/1, LeakyReLU 0.2, Conv w->2w 4/2/1, BN, LeakyReLU, Linear 2w*49->1) or 64 x 64 (three
channels, four up/down-sampling stages), and kiln_train_gan's iteration."""
import torch
import torch.nn as nn
import torch.nn.functional as F

NZ = 100


def generator(image_size=28, width=32):
    k, s0, C = (2, 7, 1) if image_size == 28 else (4, 4, 3)
    w = width
    g = [nn.ConvTranspose2d(NZ, w * 2 ** (k - 1), s0, 1, 0, bias=False), nn.BatchNorm2d(w * 2 ** (k - 1)),
         nn.ReLU(True)]
    for i in range(k - 1, 0, -1):
        g += [nn.ConvTranspose2d(w * 2 ** i, w * 2 ** (i - 1), 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2 ** (i - 1)),
              nn.ReLU(True)]
    return nn.Sequential(*g, nn.ConvTranspose2d(w, C, 4, 2, 1, bias=False), nn.Tanh())


def discriminator(image_size=28, width=32):
    k, s0, C = (2, 7, 1) if image_size == 28 else (4, 4, 3)
    w = width
    d = [nn.Conv2d(C, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for i in range(k - 1):
        d += [nn.Conv2d(w * 2 ** i, w * 2 ** (i + 1), 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2 ** (i + 1)),
              nn.LeakyReLU(0.2, True)]
    return nn.Sequential(*d, nn.Flatten(), nn.Linear(w * 2 ** (k - 1) * s0 * s0, 1))


def dcgan_init(m):
    """The DCGAN paper's (and kiln's) initialisation, for Module.apply."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def iteration(G, D, og, od, x, z, ones, zeros):
    """One kiln_train_gan iteration: G's samples, D's step on real and fake (BCE on logits),
    G's non-saturating step with D's weights frozen (requires_grad_(False), as kiln's G
    step: no D weight gradients computed for nothing). Returns D's and G's losses."""
    fake = G(z)
    od.zero_grad(set_to_none=True)
    ld = F.binary_cross_entropy_with_logits(D(x).view(-1), ones) + \
        F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
    ld.backward()
    od.step()
    og.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    lg = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
    lg.backward()
    D.requires_grad_(True)
    og.step()
    return ld, lg
