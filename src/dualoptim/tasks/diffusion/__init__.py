"""Image-generation unlearning: class-conditional diffusion (DDPM U-Net, DiT)."""
