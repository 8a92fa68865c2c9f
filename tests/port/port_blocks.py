"""Real model blocks written once as functions of a module namespace (``torch`` or ``graphc``).

Each ``make_*(torch, nn, F)`` defines its class body exactly as its source writes it, importing
nothing: the test runs it once with ``torch, torch.nn, torch.nn.functional`` and once with
``graphc, graphc.nn, graphc.nn.functional``, so porting is swapping the imports. Each names its
source. Sizes are small; each returns ``(model, example_input_shape)``.
"""

from __future__ import annotations

import math


# ---------------------------------------------------------------------------- torchvision
def make_mobilenet_v2_inverted_residual(torch, nn, F):
    """torchvision/models/mobilenetv2.py: InvertedResidual (Conv2dNormActivation inlined)."""

    class ConvBNReLU(nn.Sequential):
        def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
            padding = (kernel_size - 1) // 2
            super().__init__(
                nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
                nn.BatchNorm2d(out_planes),
                nn.ReLU6(inplace=True),
            )

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            self.stride = stride
            hidden_dim = int(round(inp * expand_ratio))
            self.use_res_connect = self.stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
            layers.extend(
                [
                    ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                    nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                    nn.BatchNorm2d(oup),
                ]
            )
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            if self.use_res_connect:
                return x + self.conv(x)
            return self.conv(x)

    return nn.Sequential(InvertedResidual(8, 8, 1, 6), InvertedResidual(8, 12, 2, 6)), (2, 8, 9, 9)


def make_resnet_basic_block(torch, nn, F):
    """torchvision/models/resnet.py: BasicBlock with a downsample branch."""

    def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
        return nn.Conv2d(
            in_planes,
            out_planes,
            3,
            stride=stride,
            padding=dilation,
            groups=groups,
            bias=False,
            dilation=dilation,
        )

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    return BasicBlock(4, 8, 2, down), (2, 4, 8, 8)


def make_resnext_bottleneck(torch, nn, F):
    """torchvision/models/resnet.py: Bottleneck with groups (ResNeXt) and width_per_group."""

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
            super().__init__()
            width = int(planes * (base_width / 64.0)) * groups
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    return Bottleneck(16, 4, groups=4, base_width=16), (2, 16, 6, 6)


def make_squeezenet_fire(torch, nn, F):
    """torchvision/models/squeezenet.py: Fire, after a ceil_mode max pool as in SqueezeNet."""

    class Fire(nn.Module):
        def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
            super().__init__()
            self.inplanes = inplanes
            self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
            self.squeeze_activation = nn.ReLU(inplace=True)
            self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
            self.expand1x1_activation = nn.ReLU(inplace=True)
            self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
            self.expand3x3_activation = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat(
                [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))],
                1,
            )

    return nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), Fire(6, 4, 5, 5)), (
        2,
        6,
        10,
        10,
    )


def make_shufflenet_v2_unit(torch, nn, F):
    """torchvision/models/shufflenetv2.py: channel_shuffle and InvertedResidual (stride 1 and 2)."""

    def channel_shuffle(x, groups: int):
        batchsize, num_channels, height, width = x.size()
        channels_per_group = num_channels // groups
        x = x.view(batchsize, groups, channels_per_group, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        x = x.view(batchsize, num_channels, height, width)
        return x

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride):
            super().__init__()
            self.stride = stride
            branch_features = oup // 2
            if self.stride > 1:
                self.branch1 = nn.Sequential(
                    self.depthwise_conv(inp, inp, kernel_size=3, stride=self.stride, padding=1),
                    nn.BatchNorm2d(inp),
                    nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                    nn.BatchNorm2d(branch_features),
                    nn.ReLU(inplace=True),
                )
            else:
                self.branch1 = nn.Sequential()
            self.branch2 = nn.Sequential(
                nn.Conv2d(
                    inp if (self.stride > 1) else branch_features, branch_features, 1, 1, 0, bias=False
                ),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
                self.depthwise_conv(
                    branch_features, branch_features, kernel_size=3, stride=self.stride, padding=1
                ),
                nn.BatchNorm2d(branch_features),
                nn.Conv2d(branch_features, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )

        @staticmethod
        def depthwise_conv(i, o, kernel_size, stride=1, padding=0, bias=False):
            return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

        def forward(self, x):
            if self.stride == 1:
                x1, x2 = x.chunk(2, dim=1)
                out = torch.cat((x1, self.branch2(x2)), dim=1)
            else:
                out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
            out = channel_shuffle(out, 2)
            return out

    return nn.Sequential(InvertedResidual(8, 16, 2), InvertedResidual(16, 16, 1)), (2, 8, 8, 8)


def make_mobilenet_v3_se(torch, nn, F):
    """torchvision/ops/misc.py SqueezeExcitation (Hardsigmoid scale) in a MobileNetV3 block with
    Hardswish (torchvision/models/mobilenetv3.py InvertedResidual, use_se, HS)."""

    class SqueezeExcitation(nn.Module):
        def __init__(self, input_channels, squeeze_channels):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
            self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
            self.activation = nn.ReLU()
            self.scale_activation = nn.Hardsigmoid()

        def _scale(self, input):
            scale = self.avgpool(input)
            scale = self.fc1(scale)
            scale = self.activation(scale)
            scale = self.fc2(scale)
            return self.scale_activation(scale)

        def forward(self, input):
            scale = self._scale(input)
            return scale * input

    class Block(nn.Module):
        def __init__(self, c, exp):
            super().__init__()
            self.block = nn.Sequential(
                nn.Conv2d(c, exp, 1, bias=False),
                nn.BatchNorm2d(exp),
                nn.Hardswish(),
                nn.Conv2d(exp, exp, 5, 1, 2, groups=exp, bias=False),
                nn.BatchNorm2d(exp),
                nn.Hardswish(),
                SqueezeExcitation(exp, 8),
                nn.Conv2d(exp, c, 1, bias=False),
                nn.BatchNorm2d(c),
            )

        def forward(self, x):
            return x + self.block(x)

    return Block(6, 16), (2, 6, 7, 7)


# ---------------------------------------------------------------------------- d2l.ai
def make_d2l_lenet(torch, nn, F):
    """d2l.ai 7.6 (LeNet): sigmoid activations and average pooling."""
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Sigmoid(),
        nn.Linear(120, 84),
        nn.Sigmoid(),
        nn.Linear(84, 10),
    )
    return net, (2, 1, 28, 28)


def make_d2l_alexnet_small(torch, nn, F):
    """d2l.ai 8.1 (AlexNet), channels and input scaled down; dropout (identity in eval)."""
    net = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(8, 12, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(12, 12, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 3 * 3, 32),
        nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(32, 10),
    )
    return net, (2, 1, 32, 32)


def make_d2l_nin(torch, nn, F):
    """d2l.ai 8.3 (NiN): nin_block and global average pooling with AdaptiveAvgPool2d."""

    def nin_block(in_channels, out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1),
            nn.ReLU(),
        )

    net = nn.Sequential(
        nin_block(1, 8, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nin_block(8, 10, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
    )
    return net, (2, 1, 12, 12)


def make_d2l_vgg_block(torch, nn, F):
    """d2l.ai 8.2 (VGG): vgg_block, stacked."""

    def vgg_block(num_convs, in_channels, out_channels):
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    return nn.Sequential(vgg_block(1, 3, 8), vgg_block(2, 8, 8)), (2, 3, 8, 8)


def make_d2l_inception(torch, nn, F):
    """d2l.ai 8.4 (GoogLeNet): Inception with four branches joined by torch.cat."""

    class Inception(nn.Module):
        def __init__(self, in_channels, c1, c2, c3, c4, **kwargs):
            super().__init__(**kwargs)
            self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
            self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
            self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
            self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
            self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
            self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
            self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

        def forward(self, x):
            p1 = F.relu(self.p1_1(x))
            p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
            p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
            p4 = F.relu(self.p4_2(self.p4_1(x)))
            return torch.cat((p1, p2, p3, p4), dim=1)

    return Inception(6, 4, (3, 5), (2, 3), 3), (2, 6, 7, 7)


def make_d2l_densenet_block(torch, nn, F):
    """d2l.ai 8.7 (DenseNet): conv_block, DenseBlock and transition_block."""

    def conv_block(input_channels, num_channels):
        return nn.Sequential(
            nn.BatchNorm2d(input_channels),
            nn.ReLU(),
            nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1),
        )

    class DenseBlock(nn.Module):
        def __init__(self, num_convs, input_channels, num_channels):
            super().__init__()
            layer = []
            for i in range(num_convs):
                layer.append(conv_block(num_channels * i + input_channels, num_channels))
            self.net = nn.Sequential(*layer)

        def forward(self, X):
            for blk in self.net:
                Y = blk(X)
                X = torch.cat((X, Y), dim=1)
            return X

    def transition_block(input_channels, num_channels):
        return nn.Sequential(
            nn.BatchNorm2d(input_channels),
            nn.ReLU(),
            nn.Conv2d(input_channels, num_channels, kernel_size=1),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )

    return nn.Sequential(DenseBlock(2, 3, 4), transition_block(11, 6)), (2, 3, 6, 6)


# ---------------------------------------------------------------------------- nanoGPT / llama
class GPTConfig:
    """nanoGPT's GPTConfig, small."""

    block_size = 8
    vocab_size = 17
    n_layer = 2
    n_head = 2
    n_embd = 16
    dropout = 0.0
    bias = True


def make_nanogpt(torch, nn, F):
    """karpathy/nanoGPT model.py: LayerNorm (optional bias), CausalSelfAttention (tril mask
    buffer, masked_fill), MLP (GELU), Block, and the GPT forward with weight tying and
    ``logits, loss`` (loss None without targets; inference keeps the last position with [-1])."""

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.attn_dropout = nn.Dropout(config.dropout)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head = config.n_head
            self.n_embd = config.n_embd
            self.dropout = config.dropout
            self.register_buffer(
                "bias",
                torch.tril(torch.ones(config.block_size, config.block_size)).view(
                    1, 1, config.block_size, config.block_size
                ),
            )

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            y = self.resid_dropout(self.c_proj(y))
            return y

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, x):
            x = self.c_fc(x)
            x = self.gelu(x)
            x = self.c_proj(x)
            x = self.dropout(x)
            return x

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.transformer = nn.ModuleDict(
                dict(
                    wte=nn.Embedding(config.vocab_size, config.n_embd),
                    wpe=nn.Embedding(config.block_size, config.n_embd),
                    drop=nn.Dropout(config.dropout),
                    h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                    ln_f=LayerNorm(config.n_embd, bias=config.bias),
                )
            )
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight

        def forward(self, idx, targets=None):
            b, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            tok_emb = self.transformer.wte(idx)
            pos_emb = self.transformer.wpe(pos)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            else:
                logits = self.lm_head(x[:, [-1], :])
                loss = None
            return logits, loss

    return GPT(GPTConfig()), (2, 8)


def make_llama_block(torch, nn, F):
    """meta-llama/llama model.py: RMSNorm, precompute_freqs_cis/apply_rotary_emb (real-valued
    form, as in many ports), Attention with rotary q/k and a causal mask from torch.full/triu,
    FeedForward (SwiGLU), TransformerBlock."""

    class RMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-6):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(dim))

        def _norm(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(x.float()).type_as(x)
            return output * self.weight

    def precompute_freqs(dim: int, end: int, theta: float = 10000.0):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
        t = torch.arange(end).float()
        freqs = torch.einsum("i,j->ij", t, freqs)
        return torch.cos(freqs) if hasattr(torch, "cos") else None, torch.sin(freqs)

    def apply_rotary_emb(x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(3)

    class Attention(nn.Module):
        def __init__(self, dim, n_heads):
            super().__init__()
            self.n_heads, self.head_dim = n_heads, dim // n_heads
            self.wq = nn.Linear(dim, dim, bias=False)
            self.wk = nn.Linear(dim, dim, bias=False)
            self.wv = nn.Linear(dim, dim, bias=False)
            self.wo = nn.Linear(dim, dim, bias=False)

        def forward(self, x, cos, sin, mask):
            bsz, seqlen, _ = x.shape
            xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
            xq = xq.view(bsz, seqlen, self.n_heads, self.head_dim)
            xk = xk.view(bsz, seqlen, self.n_heads, self.head_dim)
            xv = xv.view(bsz, seqlen, self.n_heads, self.head_dim)
            xq, xk = apply_rotary_emb(xq, cos, sin), apply_rotary_emb(xk, cos, sin)
            xq, keys, values = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
            scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)
            scores = scores + mask
            scores = F.softmax(scores.float(), dim=-1).type_as(xq)
            output = torch.matmul(scores, values)
            output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
            return self.wo(output)

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden_dim: int, multiple_of: int):
            super().__init__()
            hidden_dim = int(2 * hidden_dim / 3)
            hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
            self.w1 = nn.Linear(dim, hidden_dim, bias=False)
            self.w2 = nn.Linear(hidden_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden_dim, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class TransformerBlock(nn.Module):
        def __init__(self, dim, n_heads, seqlen):
            super().__init__()
            self.attention = Attention(dim, n_heads)
            self.feed_forward = FeedForward(dim, 4 * dim, 8)
            self.attention_norm = RMSNorm(dim)
            self.ffn_norm = RMSNorm(dim)
            cos, sin = precompute_freqs(dim // n_heads, seqlen)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

        def forward(self, x):
            seqlen = x.shape[1]
            mask = torch.full((seqlen, seqlen), float("-inf"))
            mask = torch.triu(mask, diagonal=1)
            h = x + self.attention(self.attention_norm(x), self.cos, self.sin, mask)
            return h + self.feed_forward(self.ffn_norm(h))

    return TransformerBlock(16, 2, 6), (2, 6, 16)


# ---------------------------------------------------------------------------- timm
def make_timm_convnext_block(torch, nn, F):
    """timm/models/convnext.py ConvNeXtBlock (channels-last path): depthwise 7x7 conv, permute,
    LayerNorm, MLP with GELU, layer scale ``gamma`` as a Parameter."""

    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim, ls_init_value=1e-6):
            super().__init__()
            self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))

        def forward(self, x):
            shortcut = x
            x = self.conv_dw(x)
            x = x.permute(0, 2, 3, 1)
            x = self.norm(x)
            x = self.mlp(x)
            x = x.mul(self.gamma)
            x = x.permute(0, 3, 1, 2)
            return x + shortcut

    return ConvNeXtBlock(8, ls_init_value=0.5), (2, 8, 9, 9)


def make_timm_efficientnet_ds(torch, nn, F):
    """timm/models/_efficientnet_blocks.py DepthwiseSeparableConv with SqueezeExcite (SiLU,
    reduce via mean over H, W and a sigmoid gate), GroupNorm in place of BatchNorm as timm's
    ``norm_layer`` allows."""

    class SqueezeExcite(nn.Module):
        def __init__(self, in_chs, rd_ratio=0.25):
            super().__init__()
            rd_channels = max(1, int(in_chs * rd_ratio))
            self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
            self.act1 = nn.SiLU(inplace=True)
            self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)

        def forward(self, x):
            x_se = x.mean((2, 3), keepdim=True)
            x_se = self.conv_reduce(x_se)
            x_se = self.act1(x_se)
            x_se = self.conv_expand(x_se)
            return x * x_se.sigmoid()

    class DepthwiseSeparableConv(nn.Module):
        def __init__(self, in_chs, out_chs):
            super().__init__()
            self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, 1, 1, groups=in_chs, bias=False)
            self.bn1 = nn.GroupNorm(2, in_chs)
            self.act = nn.SiLU()
            self.se = SqueezeExcite(in_chs)
            self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
            self.bn2 = nn.GroupNorm(4, out_chs)

        def forward(self, x):
            shortcut = x
            x = self.act(self.bn1(self.conv_dw(x)))
            x = self.se(x)
            x = self.bn2(self.conv_pw(x))
            return x + shortcut

    return DepthwiseSeparableConv(8, 8), (2, 8, 6, 6)


def make_dcgan_generator(torch, nn, F):
    """pytorch/examples dcgan/main.py Generator, scaled down: ConvTranspose2d, BatchNorm2d,
    ReLU, Tanh."""

    class Generator(nn.Module):
        def __init__(self, nz=4, ngf=4, nc=3):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False),
                nn.Tanh(),
            )

        def forward(self, input):
            return self.main(input)

    return Generator(), (2, 4, 1, 1)


def make_torch_transformer_encoder(torch, nn, F):
    """torch.nn.TransformerEncoderLayer (batch_first, norm_first, GELU) and MultiheadAttention
    with a key padding mask, as in the PyTorch transformer tutorial."""

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(
                16, 2, dim_feedforward=24, dropout=0.1, activation="gelu", batch_first=True, norm_first=True
            )
            self.layer2 = nn.TransformerEncoderLayer(16, 4, dim_feedforward=20, dropout=0.0, batch_first=True)
            self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            x = self.layer(x)
            x = self.layer2(x, is_causal=False)
            out, weights = self.mha(x, x, x)
            return out, weights

    return Encoder(), (2, 5, 16)
