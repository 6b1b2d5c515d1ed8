"""Face recognition: ArcFace on MS1MV2, verification, MegaFace identification. Not
implemented yet: see the face issue."""
