"""TS003 statically (best effort): factories in forward() that meet the input, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS003"]

MODEL = """
import torch
from torch import nn

class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + torch.randn(x.size(0), 4) * 0.1  # expect: TS003
"""


def _check(source: str) -> None:
    assert found(source, CODES) == expected(source)


def test_reported_on_the_factory_call() -> None:
    source = MODEL + "model = Noisy().to('cuda')\n"
    _check(source)
    (finding,) = lint(source, CODES)
    assert finding.col == 29  # torch.randn(...), not the whole expression


@pytest.mark.parametrize("mover", [
    "model = Noisy().to('cuda')\n",
    "model = Noisy().cuda()\n",
    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\nmodel = Noisy().to(device)\n",
    "def train(model, loader, device):\n    for x, y in loader:\n        x = x.to(device)\n",
    "def fit(model, args):\n    model.to(args.device)\n",
    "batch = torch.zeros(3, device=f'cuda:{0}')\n",
    "model = Noisy().to(f'cuda:{rank}')\n",
])
def test_files_that_move_something_to_a_device(mover: str) -> None:
    _check(MODEL + mover)


@pytest.mark.parametrize("no_mover", [
    "",
    "model = Noisy().to(torch.float64)\n",
    "model = Noisy().to('cpu')\n",
    "model = Noisy().to(torch.device('cpu'))\n",
    "device = 'cpu'\nmodel = Noisy().to(device)\nx = torch.zeros(3, device=device)\n",
    "torch.set_default_device('cuda')\nmodel = Noisy().to('cuda')\n",
])
def test_files_that_stay_on_the_cpu_or_set_the_default_device(no_mover: str) -> None:
    assert found(MODEL + no_mover, CODES) == set()


def test_initial_state_through_a_tuple_variable() -> None:
    _check("""
        import torch
        from torch import nn
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = nn.GRU(8, 16)
                self.lstm = nn.LSTM(8, 16)
            def forward(self, x, hidden=None):
                state = (torch.zeros(1, x.size(1), 16), torch.zeros(1, x.size(1), 16))  # expect: TS003
                out, _ = self.lstm(x, state)
                h = torch.zeros(1, x.size(1), 16)  # expect: TS003
                out2, _ = self.gru(x, h)
                return out, out2
        model = Encoder().cuda()
    """)


def test_in_place_accumulation_into_a_factory_tensor() -> None:
    _check("""
        import torch
        from torch import nn
        class Pool(nn.Module):
            def forward(self, feats):
                total = torch.zeros(feats.size(1))  # expect: TS003
                for f in feats:
                    total += f
                return total
        model = Pool().to('cuda')
    """)


def test_a_name_rebound_to_a_moved_value_is_not_reported() -> None:
    assert found("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(8, 16)
            def forward(self, x):
                h0 = torch.zeros(1, x.size(1), 16)
                c0 = torch.zeros(1, x.size(1), 16)
                if x.is_cuda:
                    h0, c0 = h0.cuda(), c0.cuda()
                return self.lstm(x, (h0, c0))
        model = Net().cuda()
    """, CODES) == set()


def test_data_transforms_run_on_the_cpu() -> None:
    assert found("""
        import torch
        from torch import nn
        from torchvision import transforms
        class AddGaussianNoise(nn.Module):
            def forward(self, img):
                return img + torch.randn(img.size()) * 0.1
        class Cutout(nn.Module):
            def forward(self, img):
                mask = torch.ones(img.shape[1:])
                return img * mask
        train_tf = transforms.Compose([transforms.ToTensor(), Cutout()])
        data = MyDataset(transform=AddGaussianNoise())
        model = Net().to('cuda')
    """, CODES) == set()


def test_inputs_that_are_not_device_tensors() -> None:
    assert found("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def forward(self, x, lengths, seq_len: int, scale=2.0, training=False, mode='a'):
                mask = torch.arange(x.size(1))[None, :] < lengths[:, None]
                pos = torch.arange(seq_len) * scale
                ramp = torch.linspace(0, 1, 5) * seq_len
                return mask, pos + ramp
        model = Net().to('cuda')
    """, CODES) == set()


def test_nested_functions_and_other_methods_are_not_forward() -> None:
    assert found("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                def helper(y):
                    return y + torch.ones(3)
                return helper(x)
            def sample(self, x):
                return x + torch.randn(x.shape)
        model = Net().to('cuda')
    """, CODES) == set()


def test_autograd_function_forward_is_checked_too() -> None:
    _check("""
        import torch
        class Clip(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return torch.maximum(x, torch.zeros(x.shape))  # expect: TS003
        y = Clip.apply(torch.randn(3).cuda())
    """)


def test_common_tutorial_models() -> None:
    _check("""
        import math
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

        class CausalSelfAttention(nn.Module):
            def __init__(self, d, T):
                super().__init__()
                self.qkv = nn.Linear(d, 3 * d)
                self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))
            def forward(self, x):
                B, T, C = x.size()
                q, k, v = self.qkv(x).split(C, dim=2)
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
                return F.softmax(att, dim=-1) @ v

        class TinyGPT(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte = nn.Embedding(100, 32)
                self.wpe = nn.Embedding(64, 32)
                self.attn = CausalSelfAttention(32, 64)
            def forward(self, idx, targets=None):
                b, t = idx.size()
                pos = torch.arange(0, t, dtype=torch.long)  # expect: TS003
                x = self.wte(idx) + self.wpe(pos)
                logits = self.attn(x)
                loss = None if targets is None else F.cross_entropy(logits.view(-1, 32), targets.view(-1))
                return logits, loss

        class VAE(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc = nn.Linear(784, 40)
                self.dec = nn.Linear(20, 784)
            def reparameterize(self, mu, logvar):
                return mu + torch.randn(mu.size()) * torch.exp(0.5 * logvar)
            def forward(self, x):
                mu, logvar = self.enc(x.view(-1, 784)).chunk(2, dim=1)
                std = torch.exp(0.5 * logvar)
                eps = torch.randn(std.size())  # expect: TS003
                z = mu + eps * std
                return torch.sigmoid(self.dec(z)), mu, logvar

        class PositionalEncoding(nn.Module):
            def __init__(self, d_model, max_len=500):
                super().__init__()
                pe = torch.zeros(max_len, d_model)
                position = torch.arange(0, max_len).unsqueeze(1)
                div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
                pe[:, 0::2] = torch.sin(position * div)
                pe[:, 1::2] = torch.cos(position * div)
                self.register_buffer("pe", pe.unsqueeze(0))
            def forward(self, x):
                return x + self.pe[:, : x.size(1)]

        class TimeEmbedding(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.dim = dim
            def forward(self, t):
                half = self.dim // 2
                freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)  # expect: TS003
                args = t[:, None].float() * freqs[None]
                return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)

        def main():
            model = TinyGPT().to(device)
            vae = VAE().to(device)
    """)


def test_tutorial_training_code_outside_forward_is_not_judged() -> None:
    assert found("""
        import torch
        from torch import nn
        device = "cuda"
        class Generator(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
            def forward(self, z):
                return self.net(z)
        def train(gen, disc, loader, opt):
            for real, _ in loader:
                real = real.to(device)
                z = torch.randn(real.size(0), 16)
                fake = gen(z)
                loss = disc(fake).mean() - disc(real).mean()
                ones = torch.ones(real.size(0), 1)
                opt.step()
    """, CODES) == set()
