"""EBind's three frozen backbones as bindery encoders (``pip install 'bindery[ebind]'``).

* ``pe-core-l14-336`` -- Perception Encoder Core L/14 at 336 px (image, text, video; 1024-d),
  ebind's own ``perception_encoder.pe`` model code;
* ``imagebind-huge-audio`` -- ImageBind-huge's audio tower (1024-d), ebind's own
  ``imagebind.imagebind_model``, with its preprocessing re-expressed in torch (:mod:`.fbank`);
* ``uni3d-g`` -- Uni3D giant (EVA-g point transformer, 1024-d), ebind's own ``uni3d`` code on
  timm's ``eva_giant_patch14_560``; pointnet2's CUDA ops have torch fallbacks (:mod:`.pointnet2`).

ebind's package ``__init__`` and its data loaders import torchaudio / torchvision / torchcodec,
which cannot be used on the CPU machines; the model modules are imported without them
(:func:`pipeline.encoders.thirdparty.ebind_module`), and what the data loaders did is here.
Weights: ``[modalities.<m>] weights`` (:mod:`pipeline.encoders.weights`) -- the pinned hub
files ebind downloads, a local copy of them, or ``"random"``.
"""
