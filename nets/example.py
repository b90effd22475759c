"""An example model builder: `dvc exp run -S model.builder=nets/example.py:dense_net`.

A builder takes the shape of one example and the class count, and returns an
uncompiled Keras model that ends in class probabilities; gradguard compiles it
with the guard and trains it as it trains its own families.
"""

import keras


def dense_net(input_shape, num_classes):
    """Two Dense layers over the flattened example, then a softmax."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="dense_net")
