"""Automated troubleshooting while WNet3D trains, after the advice of CellSeg3D's WNet3D training page.

Four checks, each on by default, each recorded in ``events.csv`` with an event code and its numbers (see
:mod:`wnet_zoo.training.events`) and logged as one line when it fires:

* **screening** (before training and per sampled patch): over-exposure (voxels at the dtype's maximum, or
  many sharing the top value), empty or almost-empty content, low contrast. Almost-empty patch positions are
  skipped by the sampler; a volume without a single usable patch is an error.
* **plateau**: the SoftNCut loss has stopped improving (its moving mean over a window of epochs fell by less
  than a tolerance); training ends there (``--no-stop-at-plateau`` trains on).
* **explosion** (every step): a NaN/Inf loss, a SoftNCut loss jumping toward its bound K, or a
  reconstruction loss blown up by orders of magnitude. The weights and optimizer state of the last good
  snapshot come back, the learning rate halves, training goes on; after a few in a row it stops.
* **balance**: each weighted term's share of the loss and of the encoder's gradient is measured every
  epoch; at a plateau the segmentation of the centre of each volume is inspected, and a collapse into
  large bright-vs-dim regions, or a reconstruction no better than a constant image, gets the page's advice
  (``--auto-balance`` raises the reconstruction weight itself).

Every check follows one protocol (:class:`~wnet_zoo.training.checks.base.Check`: ``start``, ``accept`` per step,
``end_epoch``, ``state_dict`` / ``load_state_dict``) and returns a :class:`~wnet_zoo.training.checks.base.Decision`
instead of touching the model, the optimizer or the loss: the training loop (:mod:`wnet_zoo.training.loop`) rolls
back, sets the learning rate and the reconstruction weight, and stops. Everything a check keeps between epochs is
plain data in its ``state_dict()``, saved in ``last.pt``, so a resumed run behaves exactly like an uninterrupted
one.
"""
