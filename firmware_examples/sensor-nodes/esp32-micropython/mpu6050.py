"""MPU-6050 on I2C: wake it, read accelerometer, temperature and gyroscope in one 14-byte burst.

Registers (InvenSense MPU-6000/6050 register map): PWR_MGMT_1 = 0x6B (write 0 to leave sleep mode, internal
8 MHz clock), ACCEL_XOUT_H = 0x3B, from which 14 bytes hold ax, ay, az, temperature, gx, gy, gz as big-endian
signed 16-bit values. At the power-on ranges (+-2 g, +-250 deg/s): 16384 LSB per g, 131 LSB per deg/s, and
temperature = raw / 340 + 36.53 deg C.
"""

import struct

ADDRESS = 0x68  # AD0 low; 0x69 with AD0 high
PWR_MGMT_1 = 0x6B
ACCEL_XOUT_H = 0x3B
STANDARD_GRAVITY = 9.80665
ACCEL_LSB_PER_G = 16384.0
GYRO_LSB_PER_DPS = 131.0
DEG_TO_RAD = 3.141592653589793 / 180.0


def decode(burst):
    """The 14 bytes from ACCEL_XOUT_H: (ax, ay, az in m/s2, gx, gy, gz in rad/s), temperature in deg C."""
    ax, ay, az, temp, gx, gy, gz = struct.unpack(">7h", burst)
    accel = STANDARD_GRAVITY / ACCEL_LSB_PER_G
    gyro = DEG_TO_RAD / GYRO_LSB_PER_DPS
    return (ax * accel, ay * accel, az * accel, gx * gyro, gy * gyro, gz * gyro), temp / 340.0 + 36.53


class MPU6050:
    def __init__(self, i2c, address=ADDRESS):
        self.i2c = i2c
        self.address = address
        self.i2c.writeto_mem(address, PWR_MGMT_1, b"\x00")  # wake up: the chip starts in sleep mode

    def read(self):
        """One sample: the six motion channels in the order the activity model's card lists them."""
        motion, _ = decode(self.i2c.readfrom_mem(self.address, ACCEL_XOUT_H, 14))
        return motion
