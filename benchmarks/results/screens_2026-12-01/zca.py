import numpy as np, glob, random, sys
from PIL import Image
random.seed(0)
files = sorted(glob.glob('/work/data/cifar10-jpeg/train/*/*.jpg'))
files = random.sample(files, 4000)
mean = np.load('/work/data/cifar10/mean_image.npy')
imgs = np.stack([np.asarray(Image.open(f).convert('RGB'), np.float32) for f in files]) - mean
k = 5
rng = np.random.default_rng(0)
P = []
for img in imgs:
  pad = np.pad(img, ((2,2),(2,2),(0,0)))
  for _ in range(40):
    i, j = rng.integers(0, 32, 2)
    P.append(pad[i:i+k, j:j+k].reshape(-1))
P = np.array(P, np.float64)
C = P.T @ P / len(P)
lam, U = np.linalg.eigh(C)
print('eig', lam[::-1][:5], lam[:3], lam.mean())
for eps in [float(a) for a in sys.argv[1:]]:
  W = U @ np.diag(1/np.sqrt(lam+eps)) @ U.T
  c = (k//2*k + k//2)*3
  kern = np.zeros((k,k,3,3))
  for oc in range(3):
    kern[:,:,:,oc] = W[c+oc].reshape(k,k,3)
  out = P @ W[c:c+3].T
  print('eps', eps, 'out std', out.std(0), 'center weight', kern[2,2].diagonal(), 'ring', np.abs(kern).sum((0,1,2)))
  np.save(f'whiten_eps{int(eps)}.npy', kern.astype(np.float32))
