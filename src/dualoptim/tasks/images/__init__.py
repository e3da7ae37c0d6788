"""Images shared by the vision and diffusion tasks: data sets, classifiers, their training."""
