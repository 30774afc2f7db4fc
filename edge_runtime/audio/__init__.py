"""Audio on the device: WAV files read without extra libraries, and the log-mel / MFCC front end in numpy.

Shared with the converter, so a model is calibrated and verified on exactly the features the device computes.
"""
