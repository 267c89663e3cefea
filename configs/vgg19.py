"""SP-VGGNet (VGG-19 with BN) on ImageNet, the release's recipe field by field (SPEC section 4;
``apps/sp_vgg_imagenet_{train,finetune}.yml``): bases x0.5 and x0.75, keep ratios 0.557 /
0.7366 plus the full x1.0 network, re-trained from fresh weights with the pruned structures
(the release's ``reinit_params``). VGG has no residual connections, so no ZPM.
"""

from configs import default

# sp_vgg_imagenet_{train,finetune}.yml: SGD lr 0.1, batch 256, 90 epochs, x0.2 at
# 30/50/70/80, weight decay 1e-4, s = 1e-5, gamma_0 = 0.5; the re-training runs the same
# schedule with the sparsity penalty still on and in-place distillation (T=1, alpha 0.9).
RECIPE = dict(epochs=90.0, batch_size=256, lr=0.1, schedule='multistep',
              lr_boundaries=(30, 50, 70, 80), lr_decay=0.2, warmup_epochs=0.0,
              weight_decay=1e-4, optimizer='sgd', label_smoothing=0.0, sparsity=1e-5,
              bn_scale_init=0.5)


def get_config():
    config = default.get_config()
    config.model.name = 'vgg19'
    config.model.full_width = 1.0
    config.base.widths = (0.5, 0.75)
    config.base.update(RECIPE)
    config.prune.keep_ratios = (0.557, 0.7366)
    config.prune.zpm = 'none'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'reinit'
    config.slim.update(dict(RECIPE, kd_alpha=0.9, kd_temperature=1.0))
    return config
