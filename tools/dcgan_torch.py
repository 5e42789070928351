"""The DCGAN of models/zoo/gan.h in PyTorch, for the side-by-side tools (bench_gan_vs_torch.py,
gan_quality_vs_torch.py): the same shapes at 28 x 28 (one channel; width w: G ConvT
nz->2w 7x7, BN, ReLU, ConvT 2w->w 4/2/1, BN, ReLU, ConvT w->1 4/2/1, Tanh; D Conv 1->w
4/2/1, LeakyReLU 0.2, Conv w->2w 4/2/1, BN, LeakyReLU, [minibatch discrimination,]
Linear 2w*49 [+ B]->1) or 64 x 64 (three channels, four up/down-sampling stages), and
kiln_train_gan's iteration."""
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


class MinibatchDiscrimination(nn.Module):
    """kiln's nn::MinibatchDiscrimination (Salimans et al. 2016): M = x T (N, B, C),
    o_b(x_i) = sum_{j != i} exp(-||M_i,b - M_j,b||_1), out = [x, o]; T ~ N(0, 1 / in)."""

    def __init__(self, in_features, kernels, kernel_dim):
        super().__init__()
        self.B, self.C = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) / in_features ** 0.5)

    def forward(self, x):
        n = x.shape[0]
        m = (x @ self.T).view(n, 1, self.B, self.C)
        l1 = (m - m.view(1, n, self.B, self.C)).abs().sum(3)
        return torch.cat([x, torch.exp(-l1).sum(1) - 1], 1)


def discriminator(image_size=28, width=32, mbd_kernels=0, mbd_kernel_dim=5):
    k, s0, C = (2, 7, 1) if image_size == 28 else (4, 4, 3)
    w = width
    d = [nn.Conv2d(C, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for i in range(k - 1):
        d += [nn.Conv2d(w * 2 ** i, w * 2 ** (i + 1), 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2 ** (i + 1)),
              nn.LeakyReLU(0.2, True)]
    f = w * 2 ** (k - 1) * s0 * s0
    mbd = [MinibatchDiscrimination(f, mbd_kernels, mbd_kernel_dim)] if mbd_kernels > 0 else []
    return nn.Sequential(*d, nn.Flatten(), *mbd, nn.Linear(f + mbd_kernels, 1))


def dcgan_init(m):
    """The DCGAN paper's (and kiln's) initialisation, for Module.apply."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def iteration(G, D, og, od, x, z, ones, zeros, real_target=None, relativistic=False):
    """One kiln_train_gan iteration: G's samples, D's step on real (target real_target, the
    one-sided label smoothing; default ones) and fake (BCE on logits),
    G's non-saturating step with D's weights frozen (requires_grad_(False), as kiln's G
    step: no D weight gradients computed for nothing). relativistic: the RaSGAN losses of
    models/gan/objectives.h (each side's logits against the other side's mean; G's step runs
    D on the real batch without gradients). Returns D's and G's losses."""
    bce = F.binary_cross_entropy_with_logits
    fake = G(z)
    od.zero_grad(set_to_none=True)
    t = ones if real_target is None else real_target
    lr, lf = D(x).view(-1), D(fake.detach()).view(-1)
    if relativistic:
        ld = bce(lr - lf.mean(), t) + bce(lf - lr.mean(), zeros)
    else:
        ld = bce(lr, t) + bce(lf, zeros)
    ld.backward()
    od.step()
    og.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    lf = D(fake).view(-1)
    if relativistic:
        with torch.no_grad():
            lr = D(x).view(-1)
        lg = bce(lf - lr.mean(), ones) + bce(lr - lf.mean(), zeros)
    else:
        lg = bce(lf, ones)
    lg.backward()
    D.requires_grad_(True)
    og.step()
    return ld, lg
